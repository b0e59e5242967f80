"""The host-side scripts: package data, installed and run by `migrator.hostscripts`."""
