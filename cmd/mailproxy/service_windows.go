//go:build windows

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"mailproxy/tokens"
)

// The Windows service: mailproxy service install registers "mailproxy.exe
// service run -config FILE", which the service manager starts as the
// virtual account NT SERVICE\mailproxy; service run runs serve until the
// service manager says stop (or the machine shuts down), then stops as
// serve does on SIGTERM.

const (
	serviceAccount = `NT SERVICE\` + serviceName
	// startWait is how long service start waits for Running.
	startWait = 30 * time.Second
	// startCheck is how long serve must have run before the service is
	// Running.
	startCheck = time.Second
	// stopWait bounds a stop: shutdown_grace is at most 10m.
	stopWait = 11 * time.Minute
	// preshutdownTimeout is how long Windows waits for the service to
	// stop when the machine shuts down (its default is much shorter).
	preshutdownTimeout = 60 * time.Second
	// eventID is the ID of every event (EventCreate's message file takes
	// 1 to 1000).
	eventID = 1
	// maxEventBytes keeps an event under the event log's 31,839 characters.
	maxEventBytes = 30000
)

func init() {
	// Whoever writes the token store (serve in the service, or an
	// administrator's mailproxy token add), the service can read it.
	tokens.StoreFileAccounts = append(tokens.StoreFileAccounts, serviceSID(serviceName))
}

// dataDir is %ProgramData%\mailproxy: the default place of the
// configuration, and the service's $STATE_DIRECTORY.
func dataDir() string {
	pd := os.Getenv("ProgramData")
	if pd == "" {
		pd = `C:\ProgramData`
	}
	return filepath.Join(pd, serviceName)
}

// defaultServiceConfig is -config's default: $MAILPROXY_CONFIG, else
// %ProgramData%\mailproxy\mailproxy.yaml (the service's working directory
// is System32, so ./mailproxy.yaml would mean nothing).
func defaultServiceConfig() string {
	if p := os.Getenv("MAILPROXY_CONFIG"); p != "" {
		return p
	}
	return filepath.Join(dataDir(), "mailproxy.yaml")
}

func cmdService(_ context.Context, args []string, stdout io.Writer) error {
	o, err := parseServiceArgs(args, defaultServiceConfig())
	if err != nil {
		return err
	}
	switch o.action {
	case "install":
		return serviceInstall(o, stdout)
	case "uninstall":
		return serviceUninstall(stdout)
	case "start":
		return serviceStart(stdout)
	case "stop":
		return serviceStop(stdout)
	default:
		return serviceRun(o)
	}
}

func connectSCM() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return nil, errors.New("the service manager refused access: run this from an elevated prompt (Run as administrator)")
	}
	if err != nil {
		return nil, fmt.Errorf("service manager: %w", err)
	}
	return m, nil
}

// openService opens the installed service; close both when done.
func openService() (*mgr.Mgr, *mgr.Service, error) {
	m, err := connectSCM()
	if err != nil {
		return nil, nil, err
	}
	s, err := m.OpenService(serviceName)
	if err != nil {
		m.Disconnect()
		if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
			return nil, nil, fmt.Errorf("service %s is not installed: mailproxy service install", serviceName)
		}
		return nil, nil, fmt.Errorf("service %s: %w", serviceName, err)
	}
	return m, s, nil
}

func serviceInstall(o serviceOptions, w io.Writer) error {
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.Abs(exe)
	}
	if err != nil {
		return fmt.Errorf("cannot tell this program's path: %w", err)
	}
	if o.config, err = filepath.Abs(o.config); err != nil {
		return err
	}
	if o.logFile != "" {
		if o.logFile, err = filepath.Abs(o.logFile); err != nil {
			return err
		}
	}
	m, err := connectSCM()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return fmt.Errorf("service %s is already installed: mailproxy service uninstall first", serviceName)
	}
	dir := dataDir()
	if err := prepareDataDir(dir); err != nil {
		return err
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName:      "mailproxy",
		Description:      "SMTP, IMAP and POP3 for local apps, logging in upstream with OAuth 2.0",
		StartType:        mgr.StartAutomatic,
		ErrorControl:     mgr.ErrorNormal,
		ServiceStartName: serviceAccount, // a virtual account: no password
		SidType:          windows.SERVICE_SID_TYPE_UNRESTRICTED,
	}, o.runArgs()...)
	if err != nil {
		return fmt.Errorf("create service %s: %w", serviceName, err)
	}
	defer s.Close()
	if err := configureService(s); err != nil {
		s.Delete()
		return fmt.Errorf("configure service %s (removed again): %w", serviceName, err)
	}
	err = eventlog.InstallAsEventCreate(serviceName, eventlog.Error|eventlog.Warning|eventlog.Info)
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		s.Delete()
		return fmt.Errorf("register event log source %s (service removed again): %w", serviceName, err)
	}
	logTo := `the event log (Windows Logs\Application, source ` + serviceName + ")"
	if o.logFile != "" {
		logTo = o.logFile
	}
	fmt.Fprintf(w, "service %s installed: starts with Windows as %s\n", serviceName, serviceAccount)
	fmt.Fprintf(w, "  runs     %s %s\n", exe, strings.Join(o.runArgs(), " "))
	fmt.Fprintf(w, "  data     %s (SYSTEM, Administrators and %s only)\n", dir, serviceAccount)
	fmt.Fprintf(w, "  logs     %s\n", logTo)
	if _, err := os.Stat(o.config); err != nil {
		fmt.Fprintf(w, "note: %s does not exist yet: write it, then mailproxy service start\n", o.config)
	} else {
		fmt.Fprintln(w, "next: mailproxy service start")
	}
	return nil
}

// configureService sets what CreateService cannot: restarts on failure
// and the time Windows gives a stop at shutdown.
func configureService(s *mgr.Service) error {
	err := s.SetRecoveryActions([]mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 2 * time.Minute},
	}, uint32((24 * time.Hour).Seconds()))
	if err != nil {
		return err
	}
	// An exit with an error (a port taken, a configuration refused)
	// counts as a failure, not only a crash.
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return err
	}
	info := struct{ timeoutMillis uint32 }{uint32(preshutdownTimeout.Milliseconds())}
	return windows.ChangeServiceConfig2(s.Handle, windows.SERVICE_CONFIG_PRESHUTDOWN_INFO, (*byte)(unsafe.Pointer(&info)))
}

// prepareDataDir creates dir and limits it, and what is created in it,
// to SYSTEM, the Administrators and the service's account (dataDirSDDL).
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	sddl := dataDirSDDL(serviceSID(serviceName))
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("security descriptor %s: %w", sddl, err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("security descriptor %s: %w", sddl, err)
	}
	err = windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("limit %s to SYSTEM, Administrators and %s: %w", dir, serviceAccount, err)
	}
	return nil
}

func serviceUninstall(w io.Writer) error {
	m, s, err := openService()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State != svc.Stopped {
		fmt.Fprintf(w, "stopping service %s first\n", serviceName)
		if st.State != svc.StopPending {
			if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
				return fmt.Errorf("stop service %s: %w", serviceName, err)
			}
		}
		if _, err := waitState(s, svc.Stopped, stopWait); err != nil {
			return err
		}
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("delete service %s: %w", serviceName, err)
	}
	if err := eventlog.Remove(serviceName); err != nil {
		fmt.Fprintf(w, "note: event log source %s not removed: %v\n", serviceName, err)
	}
	fmt.Fprintf(w, "service %s removed; %s (configuration, token store, state) is kept\n", serviceName, dataDir())
	return nil
}

func serviceStart(w io.Writer) error {
	m, s, err := openService()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if err := s.Start(); err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_ALREADY_RUNNING) {
			fmt.Fprintf(w, "service %s is already running\n", serviceName)
			return nil
		}
		return fmt.Errorf("start service %s: %w", serviceName, err)
	}
	if _, err := waitState(s, svc.Running, startWait); err != nil {
		return err
	}
	fmt.Fprintf(w, "service %s running\n", serviceName)
	return nil
}

func serviceStop(w io.Writer) error {
	m, s, err := openService()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if _, err := s.Control(svc.Stop); err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
			fmt.Fprintf(w, "service %s is not running\n", serviceName)
			return nil
		}
		return fmt.Errorf("stop service %s: %w", serviceName, err)
	}
	fmt.Fprintf(w, "stopping service %s: messages in flight get shutdown_grace to finish\n", serviceName)
	if _, err := waitState(s, svc.Stopped, stopWait); err != nil {
		return err
	}
	fmt.Fprintf(w, "service %s stopped\n", serviceName)
	return nil
}

// waitState waits until s is in state want. A service that stops while
// it should be starting is an error that says where its log is.
func waitState(s *mgr.Service, want svc.State, timeout time.Duration) (svc.Status, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.Query()
		if err != nil {
			return st, fmt.Errorf("service %s: %w", serviceName, err)
		}
		if st.State == want {
			return st, nil
		}
		if st.State == svc.Stopped {
			code := st.Win32ExitCode
			if code == uint32(windows.ERROR_SERVICE_SPECIFIC_ERROR) {
				code = st.ServiceSpecificExitCode
			}
			return st, fmt.Errorf("service %s stopped (exit code %d): its log says why (the event log: Windows Logs\\Application, source %s; or its -log file)", serviceName, code, serviceName)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("service %s: still %s after %v", serviceName, stateName(st.State), timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func stateName(s svc.State) string {
	switch s {
	case svc.Stopped:
		return "stopped"
	case svc.StartPending:
		return "starting"
	case svc.StopPending:
		return "stopping"
	case svc.Running:
		return "running"
	}
	return fmt.Sprintf("in state %d", s)
}

// serviceRun is what the service manager starts.
func serviceRun(o serviceOptions) error {
	isService, err := svc.IsWindowsService()
	if err != nil {
		return err
	}
	if !isService {
		return errors.New("service run is what the Windows service manager starts; in a console, run mailproxy serve -config FILE")
	}
	// As systemd's StateDirectory= does: graph.state_dir defaults to
	// $STATE_DIRECTORY\graph.
	if os.Getenv("STATE_DIRECTORY") == "" {
		os.Setenv("STATE_DIRECTORY", dataDir())
	}
	out, closeLog, err := openServiceLog(o.logFile)
	if err != nil {
		return err
	}
	defer closeLog()
	return svc.Run(serviceName, &windowsService{config: o.config, out: out})
}

// openServiceLog returns where the service logs: the file at path, or
// the event log when path is "" (or the file cannot be opened).
func openServiceLog(path string) (io.Writer, func(), error) {
	el, elErr := eventlog.Open(serviceName)
	toEventLog := func() (io.Writer, func(), error) {
		if elErr != nil {
			return nil, nil, fmt.Errorf("event log: %w", elErr)
		}
		return &eventLogWriter{el: el}, func() { el.Close() }, nil
	}
	if path == "" {
		return toEventLog()
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		if elErr == nil {
			el.Error(eventID, fmt.Sprintf("mailproxy: cannot open the log file (%v): logging here instead", err))
		}
		return toEventLog()
	}
	if elErr == nil {
		el.Close()
	}
	// A crash's trace goes to standard error: into the file too.
	windows.SetStdHandle(windows.STD_ERROR_HANDLE, windows.Handle(f.Fd()))
	os.Stderr = f
	return f, func() { f.Close() }, nil
}

// eventLogWriter makes each log record (one Write from slog's handlers)
// an event of its level.
type eventLogWriter struct {
	mu sync.Mutex
	el *eventlog.Log
}

func (w *eventLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	if len(msg) > maxEventBytes {
		msg = msg[:maxEventBytes] + " …(cut)"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	switch level := recordLevel(msg); {
	case strings.HasPrefix(level, "ERROR"):
		err = w.el.Error(eventID, msg)
	case strings.HasPrefix(level, "WARN"):
		err = w.el.Warning(eventID, msg)
	default:
		err = w.el.Info(eventID, msg)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// windowsService runs serve under the service manager.
type windowsService struct {
	config string
	out    io.Writer
}

func (s *windowsService) Execute(_ []string, r <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	log := slog.New(slog.NewTextHandler(s.out, nil))
	status <- svc.Status{State: svc.StartPending, WaitHint: uint32(startWait.Milliseconds())}
	// Not main's context: Windows tells a service's process of every
	// user's logoff as a console event that Go turns into SIGTERM.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmdServe(ctx, []string{"-config", s.config}, s.out) }()
	failed := func(err error) (bool, uint32) {
		// serve ended by itself: it could not start, or failed.
		if err == nil {
			err = errors.New("serve ended")
		}
		log.Error("service stopped: "+err.Error(), "event", "service_failed", "config", s.config)
		return true, 1
	}
	// What keeps serve from starting (the configuration, a port taken)
	// shows in a moment: then service start reports a failure, not Running.
	select {
	case err := <-done:
		return failed(err)
	case <-time.After(startCheck):
	}
	const accepts = svc.AcceptStop | svc.AcceptShutdown | svc.AcceptPreShutdown
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	log.Info("service started", "event", "service_started", "config", s.config)
	for {
		select {
		case err := <-done:
			return failed(err)
		case c := <-r:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown, svc.PreShutdown:
				log.Info("service stopping", "event", "service_stopping", "control", controlName(c.Cmd))
				return s.stop(log, cancel, done, r, status)
			}
		}
	}
}

// stop ends serve as SIGTERM does (messages in flight get shutdown_grace)
// and tells the service manager it is under way, once a second, so that
// it waits.
func (s *windowsService) stop(log *slog.Logger, cancel func(), done <-chan error, r <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	limit := time.After(stopWait)
	st := svc.Status{State: svc.StopPending, WaitHint: 5000}
	for {
		st.CheckPoint++
		status <- st
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("service stopped: "+err.Error(), "event", "service_failed")
				return true, 1
			}
			log.Info("service stopped", "event", "service_stopped")
			return false, 0
		case c := <-r:
			if c.Cmd == svc.Interrogate {
				status <- st
			}
		case <-tick.C:
		case <-limit:
			log.Error("service stopped without finishing: serve did not end", "event", "service_failed", "waited", stopWait)
			return true, 2
		}
	}
}

func controlName(c svc.Cmd) string {
	switch c {
	case svc.Stop:
		return "stop"
	case svc.Shutdown:
		return "shutdown"
	case svc.PreShutdown:
		return "preshutdown"
	}
	return fmt.Sprint(uint32(c))
}
