"""House Prices (tabular regression): pipeline, model zoo, torch MLP estimator."""
