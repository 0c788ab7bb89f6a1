"""The benchmark harness: idledger measured against baselines run in the same process."""
