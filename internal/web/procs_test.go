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

// TestLeanRuntime runs this test binary again as a child, since the
// runtime reads GOMAXPROCS and GOGC once, at start: unset, the child runs
// on one P and collects at 400%; set, the variable wins.
func TestLeanRuntime(t *testing.T) {
	if os.Getenv("WEB_LEAN_CHILD") == "1" {
		LeanRuntime()
		fmt.Printf("procs=%d\ngogc=%d\n", runtime.GOMAXPROCS(0), debug.SetGCPercent(100))
		return
	}
	for _, c := range []struct {
		name, value string // the variable set ("" for unset)
		want        string
	}{
		{"GOMAXPROCS", "", "procs=1"}, {"GOMAXPROCS", "3", "procs=3"},
		{"GOGC", "", "gogc=400"}, {"GOGC", "50", "gogc=50"}, {"GOGC", "off", "gogc=-1"},
	} {
		out, err := childOf("TestLeanRuntime", "WEB_LEAN_CHILD", c.name, c.value).CombinedOutput()
		if err != nil {
			t.Fatalf("child with %s=%q: %v\n%s", c.name, c.value, err, out)
		}
		if !strings.Contains(string(out), c.want+"\n") {
			t.Errorf("%s=%q: child printed %q, want %s", c.name, c.value, out, c.want)
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
