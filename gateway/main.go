// Command gateway is the entry point for clients: it forwards checkouts and
// order look-ups to the order service and aggregates every service's health.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/kelseyhightower/envconfig"

	"github.com/checkout-demo/checkout/internal/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(web.Healthcheck(cfg.Port))
	}
	if err := run(ctx, cfg, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then finishes the requests in flight.
// listening, when not nil, is told the bound address.
func run(ctx context.Context, cfg Config, stdout io.Writer, listening func(net.Addr)) error {
	log := web.NewLogger(stdout, cfg.LogLevel, cfg.LogFormat, "gateway")
	client := newClient()
	defer client.CloseIdleConnections()

	var stopping atomic.Bool
	health := web.Health{
		Service: "gateway",
		// The gateway can serve checkouts only while the order service can.
		Ready: map[string]web.Check{"order-service": func(ctx context.Context) error {
			if s := probe(ctx, client, cfg.OrderServiceURL+"/readyz"); s != "healthy" {
				return fmt.Errorf("%s", s)
			}
			return nil
		}},
		Stopping: stopping.Load,
	}

	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if listening != nil {
		listening(ln.Addr())
	}
	log.Info("listening", "addr", ln.Addr().String(), "order_service", cfg.OrderServiceURL)
	srv := web.NewServer(NewServer(log, cfg, client, health), log)
	srv.RegisterOnShutdown(func() { stopping.Store(true) })
	err = web.Serve(ctx, srv, ln, cfg.ShutdownTimeout)
	log.Info("stopped")
	if err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
