"""Encrypted store-and-forward sync over MQTT: arrives with the sync issue."""
