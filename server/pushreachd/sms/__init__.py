"""Supplementary SMS: the provider seam, its Tencent and console providers, batching,
retries, the local Tencent emulator and delivery receipts."""
