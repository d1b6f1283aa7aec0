package web

import (
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"
)

// About is what GET / answers: which service this is, its version, the
// endpoints it serves, and the events it consumes and publishes. The
// gateway's also names the system's links for people.
type About struct {
	Service   string            `json:"service"`
	Version   string            `json:"version"`
	Endpoints []string          `json:"endpoints"`
	Consumes  []Consumed        `json:"consumes,omitempty"`
	Publishes []string          `json:"publishes,omitempty"`
	Links     map[string]string `json:"links,omitempty"`
}

// Consumed is a queue a service consumes and the routing keys bound to it.
type Consumed struct {
	Queue       string   `json:"queue"`
	RoutingKeys []string `json:"routing_keys"`
}

// HandleAbout answers GET / for service. Its endpoints are read from
// routes (the service's router); what it consumes and publishes is the
// caller's (worker.HandleAbout reads it from the contract). links, when not
// nil, gives the system's links for the request (the gateway's).
func HandleAbout(service string, routes chi.Routes, links func(*http.Request) map[string]string, consumes []Consumed, publishes []string) http.Handler {
	about := About{Service: service, Version: version(), Consumes: consumes, Publishes: publishes}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := about
		_ = chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
			a.Endpoints = append(a.Endpoints, method+" "+route)
			return nil
		})
		slices.Sort(a.Endpoints)
		if links != nil {
			a.Links = links(r)
		}
		WriteJSON(w, http.StatusOK, a)
	})
}

// SystemLinks are the links the gateway's GET / gives people: the inbox,
// RabbitMQ's management UI and the health overview, on the host the request
// came to, at the ports `make run` and compose publish.
func SystemLinks(r *http.Request) map[string]string {
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		host = "localhost"
	}
	at := func(port, path string) string { return "http://" + net.JoinHostPort(host, port) + path }
	return map[string]string{
		"checkout":            at("9000", "/api/checkout"),
		"health":              at("9000", "/health"),
		"inbox":               at("8026", "/"),
		"rabbitmq_management": at("15672", "/"),
	}
}

// version is the module version and VCS revision the binary was built from.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " " + rev[:min(12, len(rev))] + modified
	}
	return v
}
