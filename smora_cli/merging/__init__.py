"""Merging: fold adapters into base weights, combine task adapters."""
