package web

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// CPU_PROFILE names the file, with the service's name for %s; the profile
// written at stop is a pprof file (gzip-compressed protobuf).
func TestCPUProfile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CPU_PROFILE", filepath.Join(dir, "%s.pprof"))
	stop := startProfile("order")
	stop()
	b, err := os.ReadFile(filepath.Join(dir, "order.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a pprof file: %v", err)
	}
	if n, err := io.Copy(io.Discard, zr); err != nil || n == 0 {
		t.Fatalf("profile: %d bytes, %v", n, err)
	}
}
