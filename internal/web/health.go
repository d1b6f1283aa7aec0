package web

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Check is one dependency check: nil means healthy.
type Check func(ctx context.Context) error

// Health serves the probes of a service.
//
//   - /livez answers 200 while the process runs (a restart would not help
//     anything else).
//   - /readyz answers 200 when the Ready checks pass: the service can do its
//     work now.
//   - /health reports every check by name, 503 and "unhealthy" when one fails.
type Health struct {
	Service string
	Ready   map[string]Check // what /readyz requires
	Extra   map[string]Check // reported by /health, not required for readiness
	// Stopping, when it returns true, makes /readyz fail so a load balancer
	// stops sending requests during a graceful shutdown.
	Stopping func() bool
}

// HandleLivez answers 200.
func (Health) HandleLivez() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	})
}

// HandleReadyz answers 200 when every readiness check passes, 503 otherwise.
func (h Health) HandleReadyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		results := run(r.Context(), h.Ready)
		status, code := "ready", http.StatusOK
		if h.Stopping != nil && h.Stopping() {
			status, code = "stopping", http.StatusServiceUnavailable
		}
		for _, v := range results {
			if v != "ok" {
				status, code = "not ready", http.StatusServiceUnavailable
			}
		}
		WriteJSON(w, code, map[string]any{"status": status, "checks": results})
	})
}

// HandleHealth reports every check.
func (h Health) HandleHealth() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		all := make(map[string]Check, len(h.Ready)+len(h.Extra))
		for k, v := range h.Ready {
			all[k] = v
		}
		for k, v := range h.Extra {
			all[k] = v
		}
		results := run(r.Context(), all)
		status, code := "healthy", http.StatusOK
		for _, v := range results {
			if v != "ok" {
				status, code = "unhealthy", http.StatusServiceUnavailable
			}
		}
		WriteJSON(w, code, map[string]any{"status": status, "service": h.Service, "checks": results})
	})
}

func run(ctx context.Context, checks map[string]Check) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string]string, len(checks))
	for name, check := range checks {
		wg.Go(func() {
			res := "ok"
			if err := check(ctx); err != nil {
				res = err.Error()
			}
			mu.Lock()
			out[name] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}
