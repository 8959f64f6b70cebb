"""A stand-in for Fly.io's ``fly`` command line (flyctl), for the deploy script's tests."""
