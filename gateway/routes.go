package main

import (
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/web"
)

func addRoutes(r chi.Router, log *slog.Logger, metrics *telemetry.Metrics, cfg Config, client *http.Client, health web.Health, auth *authenticator) {
	orders := newOrderClient(log, metrics, cfg, client)
	r.Method(http.MethodGet, "/", web.HandleAbout("gateway", r, web.SystemLinks, nil, nil))
	// Probes are not limited: the orchestrator asks them from one address.
	r.Group(func(r chi.Router) {
		r.Use(guard(log, cfg, auth, newLimiter(cfg.RateLimitRPS, cfg.RateLimitBurst, maxClients)))
		r.Method(http.MethodPost, "/api/checkout", handleCheckout(log, orders))
		r.Method(http.MethodGet, "/api/orders", handleListOrders(log, orders))
		r.Method(http.MethodGet, "/api/orders/{id}", requireCredential(handleGetOrder(log, orders)))
		// One order's trace as a waterfall, drawn from Jaeger's query API
		// (the trace_id of the order's answer).
		r.Method(http.MethodGet, "/traces/{trace_id}", telemetry.TracePage(cfg.JaegerQueryURL))
		r.Method(http.MethodGet, "/health", handleHealth(cfg, client, orders.State))
	})
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())
}
