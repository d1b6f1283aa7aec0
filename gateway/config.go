package main

import "time"

// Config is read from the environment (see the README's configuration table).
type Config struct {
	Port string `envconfig:"PORT" default:"9000"`
	// ListenHost is the address the HTTP server binds: loopback unless
	// opened (compose and Kubernetes set 0.0.0.0).
	ListenHost        string        `envconfig:"LISTEN_HOST" default:"127.0.0.1"`
	OrderServiceURL   string        `envconfig:"ORDER_SERVICE_URL" default:"http://localhost:8001"`
	PaymentServiceURL string        `envconfig:"PAYMENT_SERVICE_URL" default:"http://localhost:8002"`
	EmailServiceURL   string        `envconfig:"EMAIL_SERVICE_URL" default:"http://localhost:8003"`
	UpstreamTimeout   time.Duration `envconfig:"UPSTREAM_TIMEOUT" default:"5s"`
	HealthTimeout     time.Duration `envconfig:"HEALTH_TIMEOUT" default:"1s"`
	ShutdownTimeout   time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
	LogFormat         string        `envconfig:"LOG_FORMAT" default:"json"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info"`
	// HealthCacheTTL is how long the public /health answer is reused, so
	// that it cannot be used to flood the services or the SMTP relay.
	HealthCacheTTL time.Duration `envconfig:"HEALTH_CACHE_TTL" default:"1s"`
	// Requests per second and burst per client (the signed-in customer, or
	// the address); RATE_LIMIT_RPS=0 turns the limit off.
	RateLimitRPS   float64 `envconfig:"RATE_LIMIT_RPS" default:"20"`
	RateLimitBurst int     `envconfig:"RATE_LIMIT_BURST" default:"40"`
	// ClientIPHeader names the header a trusted proxy in front puts the
	// client's address in (X-Forwarded-For, X-Real-IP); empty: the peer.
	ClientIPHeader string `envconfig:"CLIENT_IP_HEADER"`
	// The optional signed-in mode: customers' JWTs, verified with an HS256
	// secret or the keys at a JWKS URL.
	JWTSecret   string `envconfig:"AUTH_JWT_HS256_SECRET"`
	JWKSURL     string `envconfig:"AUTH_JWT_JWKS_URL"`
	JWTIssuer   string `envconfig:"AUTH_JWT_ISSUER"`
	JWTAudience string `envconfig:"AUTH_JWT_AUDIENCE"`

	// UpstreamAttempts bounds the calls of one request whose outcome stays
	// unknown (a checkout is retried with the same idempotency key).
	UpstreamAttempts int `envconfig:"UPSTREAM_ATTEMPTS" default:"3"`
	// BreakerFailures timed-out calls or dropped answers in a row open the
	// circuit breaker to the order service; BreakerOpenTimeout later it
	// lets one call through to see whether the order service is back.
	BreakerFailures    int           `envconfig:"BREAKER_FAILURES" default:"5"`
	BreakerOpenTimeout time.Duration `envconfig:"BREAKER_OPEN_TIMEOUT" default:"5s"`

	// JaegerQueryURL is the Jaeger query API the /traces/{trace_id} page
	// draws one trace from.
	JaegerQueryURL string `envconfig:"JAEGER_QUERY_URL" default:"http://localhost:16686"`
}
