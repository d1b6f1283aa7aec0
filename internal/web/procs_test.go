package web

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestOneCoreUnlessSet runs this test binary again as a child, since
// GOMAXPROCS is read once at start: unset, the child runs on one P; set,
// the variable wins.
func TestOneCoreUnlessSet(t *testing.T) {
	if os.Getenv("WEB_PROCS_CHILD") == "1" {
		oneCoreUnlessSet()
		fmt.Printf("procs=%d\n", runtime.GOMAXPROCS(0))
		return
	}
	for _, c := range []struct {
		env  string // GOMAXPROCS, "" for unset
		want string
	}{{"", "procs=1"}, {"3", "procs=3"}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOneCoreUnlessSet$")
		cmd.Env = []string{"WEB_PROCS_CHILD=1"}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GOMAXPROCS=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		if c.env != "" {
			cmd.Env = append(cmd.Env, "GOMAXPROCS="+c.env)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child with GOMAXPROCS=%q: %v\n%s", c.env, err, out)
		}
		if !strings.Contains(string(out), c.want+"\n") {
			t.Errorf("GOMAXPROCS=%q: child printed %q, want %s", c.env, out, c.want)
		}
	}
}
