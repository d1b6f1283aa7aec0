package web

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
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
		out, err := childOf("TestOneCoreUnlessSet", "WEB_PROCS_CHILD", "GOMAXPROCS", c.env).CombinedOutput()
		if err != nil {
			t.Fatalf("child with GOMAXPROCS=%q: %v\n%s", c.env, err, out)
		}
		if !strings.Contains(string(out), c.want+"\n") {
			t.Errorf("GOMAXPROCS=%q: child printed %q, want %s", c.env, out, c.want)
		}
	}
}

// TestLessGCUnlessSet runs this test binary again as a child, as the
// runtime reads GOGC at start: unset, the child collects at 400%; set,
// the variable wins.
func TestLessGCUnlessSet(t *testing.T) {
	if os.Getenv("WEB_GC_CHILD") == "1" {
		lessGCUnlessSet()
		fmt.Printf("gogc=%d\n", debug.SetGCPercent(100))
		return
	}
	for _, c := range []struct {
		env  string // GOGC, "" for unset
		want string
	}{{"", "gogc=400"}, {"50", "gogc=50"}, {"off", "gogc=-1"}} {
		out, err := childOf("TestLessGCUnlessSet", "WEB_GC_CHILD", "GOGC", c.env).CombinedOutput()
		if err != nil {
			t.Fatalf("child with GOGC=%q: %v\n%s", c.env, err, out)
		}
		if !strings.Contains(string(out), c.want+"\n") {
			t.Errorf("GOGC=%q: child printed %q, want %s", c.env, out, c.want)
		}
	}
}

// TestMainStartsWithSteadySysmon runs Main in a child of this test binary:
// with GODEBUG unset or naming other settings, the run function must see
// schedtrace added (the runtime reads it only at start, so Main starts the
// process again in place: the same pid prints each start); with schedtrace
// named, GODEBUG is left as it is and the process starts once.
func TestMainStartsWithSteadySysmon(t *testing.T) {
	if os.Getenv("WEB_SYSMON_CHILD") == "1" {
		fmt.Printf("start pid=%d\n", os.Getpid())
		Main("child", &struct{}{}, func(context.Context) error {
			fmt.Printf("run pid=%d GODEBUG=%q\n", os.Getpid(), os.Getenv("GODEBUG"))
			return nil
		}, nil)
		return
	}
	for _, c := range []struct {
		godebug string // "" for unset
		want    string
		starts  int
	}{
		{"", sysmonSetting, 2},
		{"madvdontneed=1", "madvdontneed=1," + sysmonSetting, 2},
		{"schedtrace=0", "schedtrace=0", 1},
	} {
		cmd := childOf("TestMainStartsWithSteadySysmon", "WEB_SYSMON_CHILD", "GODEBUG", c.godebug)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child with GODEBUG=%q: %v\n%s", c.godebug, err, out)
		}
		pid := cmd.Process.Pid
		wantOut := strings.Repeat(fmt.Sprintf("start pid=%d\n", pid), c.starts) +
			fmt.Sprintf("run pid=%d GODEBUG=%q\n", pid, c.want)
		if got := string(out); !strings.Contains(got, wantOut) {
			t.Errorf("GODEBUG=%q: child printed\n%s\nwant\n%s", c.godebug, got, wantOut)
		}
	}
}

// childOf is a command running this test binary's test again as a child:
// marker=1 in its environment, and the variable name set to value, or
// unset when value is "".
func childOf(test, marker, name, value string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = []string{marker + "=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, name+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if value != "" {
		cmd.Env = append(cmd.Env, name+"="+value)
	}
	return cmd
}
