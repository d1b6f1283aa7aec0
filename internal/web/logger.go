package web

import (
	"io"
	"log/slog"
	"strings"
)

// NewLogger returns the logger a service passes down from run: JSON lines,
// or logfmt-style text when format is "text" (make run uses it for people to
// read). Every line carries the service's name.
func NewLogger(w io.Writer, level, format, service string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("service", service)
}
