package web

import (
	"bytes"
	"strings"
	"testing"
)

// Both formats carry the service's name on every line, as the doc says.
func TestNewLoggerNamesTheService(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log := NewLogger(&buf, "debug", format, "payment")
			log.Debug("hello")
			if line := buf.String(); !strings.Contains(line, "payment") || !strings.Contains(line, "service") {
				t.Fatalf("line without the service: %q", line)
			}
		})
	}
}
