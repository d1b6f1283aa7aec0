package main

import "time"

// Config is read from the environment (see the README's configuration table).
type Config struct {
	Port              string        `envconfig:"PORT" default:"9000"`
	OrderServiceURL   string        `envconfig:"ORDER_SERVICE_URL" default:"http://localhost:8001"`
	PaymentServiceURL string        `envconfig:"PAYMENT_SERVICE_URL" default:"http://localhost:8002"`
	EmailServiceURL   string        `envconfig:"EMAIL_SERVICE_URL" default:"http://localhost:8003"`
	UpstreamTimeout   time.Duration `envconfig:"UPSTREAM_TIMEOUT" default:"5s"`
	HealthTimeout     time.Duration `envconfig:"HEALTH_TIMEOUT" default:"1s"`
	ShutdownTimeout   time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
	LogFormat         string        `envconfig:"LOG_FORMAT" default:"json"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info"`
}
