"""Helpers the tests share: a real icecast2, a listener and MP3 fixtures."""
