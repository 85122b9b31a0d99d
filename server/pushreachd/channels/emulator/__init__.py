"""Loopback emulators of the push vendors, speaking their wire protocols (auth included)."""
