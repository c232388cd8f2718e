package elasticsearch

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper"
)

// Credentials. Every request to Elasticsearch (bulk requests with each of
// their attempts, the pool's probes, the start-up check) gets its
// Authorization header here, from the credentials as they are now: a
// secret read from a file is read again when the file changes, so a
// rotated Kubernetes secret applies to the next request without a restart.
// go-elasticsearch is given no credentials of its own, so that exactly one
// place sets the header.

// maxSecretBytes bounds a secret file: an API key is about 100 bytes and a
// JWT a few KiB; a larger file is not a credential.
const maxSecretBytes = 64 << 10

// secretCheckInterval is the least time between two checks of a secret
// file for a change: one stat a second at most, whatever the request rate.
const secretCheckInterval = time.Second

// scheme is an authentication scheme: the settings that configure it and
// how its header is made.
type scheme struct {
	name       string // "Basic", "ApiKey" or "Bearer"
	value      shipper.Secret
	file       string
	valueSet   string // the setting names, for messages
	fileSet    string
	configured bool
}

// schemes returns the three schemes as configured, basic first.
func (c Config) schemes() []scheme {
	return []scheme{
		{name: "Basic", value: c.Password, file: c.PasswordFile, valueSet: "password", fileSet: "password_file",
			configured: c.Username != "" || c.Password != "" || c.PasswordFile != ""},
		{name: "ApiKey", value: c.APIKey, file: c.APIKeyFile, valueSet: "api_key", fileSet: "api_key_file",
			configured: c.APIKey != "" || c.APIKeyFile != ""},
		{name: "Bearer", value: c.BearerToken, file: c.BearerTokenFile, valueSet: "bearer_token", fileSet: "bearer_token_file",
			configured: c.BearerToken != "" || c.BearerTokenFile != ""},
	}
}

// validateCredentials records what is wrong with the credentials: two
// schemes at once, a secret given twice, a basic scheme without its user
// or password, a secret file that cannot be read. No message shows a
// secret.
func (c Config) validateCredentials(p *shipper.Problems) {
	var first *scheme
	for _, s := range c.schemes() {
		if !s.configured {
			continue
		}
		if first != nil {
			// Refused rather than ranked: a configuration that names two
			// schemes is a mistake, and sending the one it did not mean
			// would fail later, as a 401, far from the cause.
			p.Addf(s.setting(), "configure one way to authenticate: %s and %s are both set", first.describe(), s.describe())
			continue
		}
		first = &s
		switch {
		case s.value != "" && s.file != "":
			p.Addf(s.fileSet, "set %s or %s, not both", s.valueSet, s.fileSet)
		case s.value != "":
			if err := checkSecret(s.value.Reveal()); err != nil {
				p.Addf(s.valueSet, "%v", err)
			}
		case s.file != "":
			if _, err := readSecretFile(s.file); err != nil {
				p.Addf(s.fileSet, "%v", err)
			}
		case s.name == "Basic":
			p.Addf("password", "username %q needs password or password_file", c.Username)
		}
		if s.name == "Basic" {
			switch {
			case c.Username == "":
				p.Addf("username", "required with %s", s.setting())
			case strings.Contains(c.Username, ":") || strings.ContainsFunc(c.Username, isControl):
				// Basic authentication joins user and password with a
				// colon: the user cannot hold one.
				p.Addf("username", "%q: a user name cannot hold a colon or a control character", c.Username)
			}
		}
	}
}

// setting names the scheme's setting that is set, for a message's path.
func (s scheme) setting() string {
	switch {
	case s.value != "":
		return s.valueSet
	case s.file != "":
		return s.fileSet
	}
	return "username"
}

func (s scheme) describe() string {
	if s.name == "Basic" {
		return "username/password"
	}
	return s.setting()
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// checkSecret says what makes a secret unusable in a header, without the
// secret.
func checkSecret(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case strings.ContainsFunc(s, isControl):
		return errors.New("holds a control character (a line break inside?); it cannot be sent in a header")
	}
	return nil
}

// readSecretFile reads a secret file: its content less one final newline
// (what `echo` and most editors add), checked by checkSecret. An error
// names the file and never shows its content.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read it: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	case len(b) > maxSecretBytes:
		return "", fmt.Errorf("%s holds more than %d bytes: not a credential", path, maxSecretBytes)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if err := checkSecret(s); err != nil {
		return "", fmt.Errorf("%s %w", path, err)
	}
	return s, nil
}

// credentials set the Authorization header of requests to Elasticsearch.
// A nil *credentials sets nothing. Safe for concurrent use.
type credentials struct {
	scheme   string // "Basic", "ApiKey" or "Bearer"
	username string
	secret   string      // the configured secret, unless it comes from a file
	file     *secretFile // the secret's file
}

// newCredentials returns the configured credentials, reading a secret file
// once; nil when none are configured.
func newCredentials(cfg Config, log *slog.Logger) (*credentials, error) {
	for _, s := range cfg.schemes() {
		if !s.configured {
			continue
		}
		c := &credentials{scheme: s.name, username: cfg.Username, secret: s.value.Reveal()}
		if s.file != "" {
			f, err := newSecretFile(s.fileSet, s.file, log)
			if err != nil {
				return nil, &shipper.FieldError{Path: s.fileSet, Err: err}
			}
			c.file = f
		}
		return c, nil
	}
	return nil, nil
}

// authorize sets h's Authorization header from the current credentials.
func (c *credentials) authorize(h http.Header) {
	if c == nil {
		return
	}
	secret := c.secret
	if c.file != nil {
		secret = c.file.current()
	}
	switch c.scheme {
	case "Basic":
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.username+":"+secret)))
	case "ApiKey":
		h.Set("Authorization", "ApiKey "+encodeAPIKey(secret))
	case "Bearer":
		h.Set("Authorization", "Bearer "+secret)
	}
}

// encodeAPIKey returns an API key in the form the header takes: base64 of
// id:api_key. A key given as id:api_key is encoded; an encoded key (base64
// never holds a colon) is sent as it is.
func encodeAPIKey(k string) string {
	if strings.Contains(k, ":") {
		return base64.StdEncoding.EncodeToString([]byte(k))
	}
	return k
}

// secretFile is a secret kept in a file, read again when the file changes.
//
// A change is seen by stat, which follows symbolic links, so that the
// Kubernetes way of updating a mounted secret (a new directory, then the
// ..data link swapped to it) counts as much as a file rewritten in place:
// the device, inode, size, modification and change times together are the
// file's stamp. The stamp is taken before the content is read, so the
// content kept is never older than the stamp: a change made while reading
// is seen at the next check.
type secretFile struct {
	setting, path string
	log           *slog.Logger
	// every is the least time between checks; 0 checks on every call
	// (tests).
	every time.Duration

	value   atomic.Pointer[string]
	checked atomic.Int64 // unix nanoseconds of the last check

	mu      sync.Mutex // held by the one caller that checks
	stamp   fileStamp
	failing bool // a read failed and was logged; cleared by the next good one
}

// fileStamp identifies a version of a file.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // unix nanoseconds
}

func statFile(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino, st.ctime = uint64(s.Dev), s.Ino, s.Ctim.Nano()
	}
	return st, nil
}

// newSecretFile reads the secret file once: an error here stops the start.
func newSecretFile(setting, path string, log *slog.Logger) (*secretFile, error) {
	f := &secretFile{setting: setting, path: path, log: log, every: secretCheckInterval}
	st, err := statFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read it: %w", err)
	}
	v, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	f.stamp = st
	f.value.Store(&v)
	f.checked.Store(time.Now().UnixNano())
	return f, nil
}

// current returns the secret, reading the file again first if it changed
// since the last check and that check is at least every old. It never
// blocks on another caller's check: that caller's result is for the next
// request.
func (f *secretFile) current() string {
	if time.Now().UnixNano()-f.checked.Load() >= int64(f.every) && f.mu.TryLock() {
		if now := time.Now().UnixNano(); now-f.checked.Load() >= int64(f.every) {
			f.checked.Store(now)
			f.refresh()
		}
		f.mu.Unlock()
	}
	return *f.value.Load()
}

// refresh reads the file again if its stamp changed. A file that cannot be
// read keeps the last value, and is logged once until it is read again.
// The caller holds f.mu.
func (f *secretFile) refresh() {
	st, err := statFile(f.path)
	if err == nil && st == f.stamp {
		return
	}
	var v string
	if err == nil {
		// The new stamp is kept even if the content is bad (empty, too
		// large): only another change can mend it, so it is not read
		// again every second meanwhile. A failed stat is tried again.
		f.stamp = st
		v, err = readSecretFile(f.path)
	}
	if err != nil {
		if !f.failing {
			f.failing = true
			f.log.Warn("elasticsearch: a credential file changed and cannot be read; still sending the last value read",
				"setting", "elasticsearch."+f.setting, "path", f.path, "err", err)
		}
		return
	}
	recovered := f.failing
	f.failing = false
	if old := f.value.Load(); *old != v {
		f.value.Store(&v)
		f.log.Info("elasticsearch: a credential file changed; sending its new value from now on",
			"setting", "elasticsearch."+f.setting, "path", f.path)
	} else if recovered {
		f.log.Info("elasticsearch: a credential file is readable again, unchanged",
			"setting", "elasticsearch."+f.setting, "path", f.path)
	}
}
