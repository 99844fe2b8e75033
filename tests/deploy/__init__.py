"""Tests of the deployment files: Dockerfile, compose.yaml and deploy/kubernetes (with its KEDA autoscaling)."""
