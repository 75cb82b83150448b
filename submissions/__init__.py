"""Submission writer and validators; run outputs land in ``submissions/<competition>/``."""

from submissions.writer import RunFiles, SubmissionSpec, validate_submission, write_run

__all__ = ["RunFiles", "SubmissionSpec", "validate_submission", "write_run"]
