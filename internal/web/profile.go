package web

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
)

// startProfile starts a CPU profile when CPU_PROFILE names a file (a "%s"
// in it becomes the service's name, so one setting serves every service of
// `make cost`), and returns what stops it and writes the file. It is a
// diagnostic: read the file with `go tool pprof`.
func startProfile(name string) (stop func()) {
	path := os.Getenv("CPU_PROFILE")
	if path == "" {
		return func() {}
	}
	path = strings.ReplaceAll(path, "%s", name)
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+": CPU_PROFILE:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
