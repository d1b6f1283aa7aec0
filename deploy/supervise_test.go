package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// supervisor starts scripts/supervise.sh (what `make run` runs each process
// under) in its own process group, as a terminal's job is.
func supervisor(t *testing.T, command ...string) (cmd *exec.Cmd, pidfile string, done chan error) {
	t.Helper()
	pidfile = filepath.Join(t.TempDir(), "pid")
	cmd = exec.Command("bash", append([]string{filepath.Join(root, "scripts", "supervise.sh"), "svc", "33"}, command...)...)
	cmd.Env = append(os.Environ(), "SUPERVISE_PIDFILE="+pidfile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("supervisor output:\n%s", out.String())
		}
	})
	return cmd, pidfile, done
}

// runningPid waits until the pid file names a live process other than not.
func runningPid(t *testing.T, pidfile string, not int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidfile)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != not && syscall.Kill(pid, 0) == nil {
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no live process other than %d in %s", not, pidfile)
	return 0
}

// A process killed with -9 is started again; Ctrl-C (SIGINT to the process
// group) stops it for good.
func TestSuperviseRestartsKilled(t *testing.T) {
	cmd, pidfile, done := supervisor(t, "sleep", "300")
	first := runningPid(t, pidfile, 0)
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := runningPid(t, pidfile, first)
	// Killed again later: restarted again (a crash long after the start is
	// no start failure).
	if err := syscall.Kill(second, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	third := runningPid(t, pidfile, second)

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("supervisor after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the supervisor did not stop on SIGINT")
	}
	done <- nil // for the cleanup
	if syscall.Kill(third, 0) == nil {
		t.Errorf("process %d still runs after Ctrl-C", third)
	}
	b, _ := os.ReadFile(pidfile)
	if strings.TrimSpace(string(b)) != strconv.Itoa(third) {
		t.Errorf("a process was started after Ctrl-C (pid file %s)", b)
	}
}

// A process that fails at once, again and again, is given up on: five tries,
// then the supervisor exits 1.
func TestSuperviseGivesUp(t *testing.T) {
	count := filepath.Join(t.TempDir(), "starts")
	_, _, done := supervisor(t, "sh", "-c", `echo x >> "$0"; exit 3`, count)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err == nil || !asExit(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("supervisor: %v, want exit status 1", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the supervisor did not give up on a process that fails at once")
	}
	done <- nil
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "x"); n != 5 {
		t.Errorf("started %d times, want 5", n)
	}
}

func asExit(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	*target = ee
	return ok
}
