// Command gateway is the entry point for clients: it forwards checkouts and
// order look-ups to the order service and aggregates every service's health.
package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"

	"github.com/checkout-demo/checkout/internal/web"
)

func main() {
	var cfg Config
	web.Main("gateway", &cfg,
		func(ctx context.Context) error { return run(ctx, cfg, os.Stdout, nil) },
		func() []web.Command {
			return []web.Command{web.HealthcheckCommand(cfg.Port), {Name: "token", Run: tokenCommand(cfg, os.Stdout)}}
		})
}

// run serves until ctx is done, then finishes the requests in flight.
// listening, when not nil, is told the bound address.
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	log := web.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat, "gateway")
	metrics, stopTelemetry, err := web.Telemetry(ctx, log, "gateway", cfg.ShutdownTimeout)
	if err != nil {
		return err
	}
	defer stopTelemetry()
	client := newClient()
	defer client.CloseIdleConnections()
	auth, err := newAuthenticator(ctx, cfg)
	if err != nil {
		return err
	}

	var stopping atomic.Bool
	health := web.Health{
		Log:     log,
		Service: "gateway",
		// The gateway can serve checkouts only while the order service can.
		Ready: map[string]web.Check{"order-service": func(ctx context.Context) error {
			if s := probe(ctx, client, cfg.OrderServiceURL+"/readyz"); s != "healthy" {
				return errors.New(s)
			}
			return nil
		}},
		Stopping: stopping.Load,
	}
	err = web.ListenAndServe(ctx, log, net.JoinHostPort(cfg.ListenHost, cfg.Port), NewServer(log, metrics, cfg, client, health, auth), cfg.ShutdownTimeout, &stopping, listening,
		"order_service", cfg.OrderServiceURL)
	log.Info("stopped")
	return err
}
