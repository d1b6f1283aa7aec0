package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/internal/worker"
)

func addRoutes(r chi.Router, health web.Health) {
	r.Method(http.MethodGet, "/", worker.HandleAbout("email", r))
	r.Method(http.MethodGet, "/health", health.HandleHealth())
	r.Method(http.MethodGet, "/livez", health.HandleLivez())
	r.Method(http.MethodGet, "/readyz", health.HandleReadyz())
}
