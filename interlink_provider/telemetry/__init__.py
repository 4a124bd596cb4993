"""What the daemons tell operators about themselves: Prometheus metrics and OpenTelemetry traces."""
