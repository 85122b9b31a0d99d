"""Persistence. The engine depends on the Store protocol (base.py) only."""

from .base import FireJob, SmsOutcome, Store

__all__ = ["FireJob", "SmsOutcome", "Store"]
