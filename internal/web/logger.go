package web

import (
	"io"
	"log/slog"
	"strings"
)

// NewLogger returns the JSON logger a service passes down from run; every
// line carries the service's name.
func NewLogger(w io.Writer, level, service string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})).With("service", service)
}
