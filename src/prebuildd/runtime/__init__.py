"""What every layer may use and that knows no service: injected time, configuration, metrics, notifications."""
