package stacktest

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const minJava = 17

const (
	installJava  = "apt-get install openjdk-17-jre-headless"
	installMaven = "apt-get install maven"
)

// javaHome is a Java installation the servers run on.
type javaHome struct {
	Home  string // directory containing bin/java
	Java  string // Home/bin/java
	Major int
}

// findJava locates Java: $envVar if set, else $JAVA_HOME, else `java` on
// PATH, and checks that it is at least Java 17.
func findJava(ctx context.Context, envVar string) (javaHome, error) {
	var java, from string
	if h := os.Getenv(envVar); envVar != "" && h != "" {
		java, from = filepath.Join(h, "bin", "java"), "$"+envVar
	} else if h := os.Getenv("JAVA_HOME"); h != "" {
		java, from = filepath.Join(h, "bin", "java"), "$JAVA_HOME"
	} else {
		p, err := exec.LookPath("java")
		if err != nil {
			return javaHome{}, fmt.Errorf("Java %d or newer is required, but there is no `java` on PATH and JAVA_HOME is not set: %s", minJava, installJava)
		}
		java, from = p, "PATH"
	}
	real, err := filepath.EvalSymlinks(java)
	if err != nil {
		return javaHome{}, fmt.Errorf("Java %d or newer is required, but %s (from %s) does not exist: %s (or fix %s)", minJava, java, from, installJava, from)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, real, "-version").CombinedOutput()
	if err != nil {
		return javaHome{}, fmt.Errorf("Java %d or newer is required, but `%s -version` failed (%v): %s\n%s", minJava, real, err, installJava, out)
	}
	major, err := parseJavaMajor(string(out))
	if err != nil {
		return javaHome{}, fmt.Errorf("Java %d or newer is required: %v: %s", minJava, err, installJava)
	}
	if major < minJava {
		return javaHome{}, fmt.Errorf("Java %d or newer is required, but %s (from %s) is Java %d: %s (and make it the default with update-alternatives, or set JAVA_HOME)", minJava, real, from, major, installJava)
	}
	return javaHome{Home: filepath.Dir(filepath.Dir(real)), Java: real, Major: major}, nil
}

// ensureDists makes sure the Kafka jars and the extracted Elasticsearch
// distribution exist under dist/. Missing pieces are fetched with Maven,
// offline first (from ~/.m2), then online.
func (l *layout) ensureDists(ctx context.Context, log io.Writer) error {
	kafkaOK := fileExists(filepath.Join(l.kafkaDist(), "kafka_2.13-"+KafkaVersion+".jar"))
	esOK := fileExists(filepath.Join(l.esDist(), "bin", "elasticsearch"))
	if kafkaOK && esOK {
		return nil
	}
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return fmt.Errorf("Maven is required to download Kafka %s and Elasticsearch %s: %s", KafkaVersion, ESVersion, installMaven)
	}
	if err := os.MkdirAll(l.distDir(), 0o755); err != nil {
		return err
	}
	pom := filepath.Join(l.distDir(), "pom.xml")
	if err := os.WriteFile(pom, pomXML, 0o644); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(l.distDir(), ".fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	kafkaTmp, esTmp := filepath.Join(tmp, "kafka"), filepath.Join(tmp, "elasticsearch")
	args := []string{"-B", "-q", "-Dstyle.color=never", "-f", pom,
		"-Dstack.kafka.dir=" + kafkaTmp, "-Dstack.es.dir=" + esTmp}
	var what []string
	if !kafkaOK {
		args = append(args, "dependency:copy-dependencies@kafka")
		what = append(what, "Kafka "+KafkaVersion)
	}
	if !esOK {
		args = append(args, "dependency:copy@elasticsearch")
		what = append(what, "Elasticsearch "+ESVersion)
	}
	start := time.Now()
	if _, err := runMaven(ctx, mvn, append([]string{"-o"}, args...)); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(log, "stack: downloading %s with Maven (first run only; cached in ~/.m2)\n", strings.Join(what, " and "))
		if out, err := runMaven(ctx, mvn, args); err != nil {
			return fmt.Errorf("Maven could not fetch %s (%v); command: %s %s\n%s",
				strings.Join(what, " and "), err, mvn, strings.Join(args, " "), lastLines(out, 60))
		}
	} else {
		fmt.Fprintf(log, "stack: copied %s from the local Maven repository\n", strings.Join(what, " and "))
	}
	if !kafkaOK {
		if !fileExists(filepath.Join(kafkaTmp, "kafka_2.13-"+KafkaVersion+".jar")) {
			return fmt.Errorf("Maven finished but %s has no kafka_2.13-%s.jar", kafkaTmp, KafkaVersion)
		}
		os.RemoveAll(l.kafkaDist())
		if err := os.Rename(kafkaTmp, l.kafkaDist()); err != nil {
			return err
		}
	}
	if !esOK {
		zipPath := filepath.Join(esTmp, "elasticsearch-"+ESVersion+".zip")
		extracted := filepath.Join(tmp, "es-home")
		if err := unzipStrip(zipPath, extracted); err != nil {
			return fmt.Errorf("extracting %s: %w", zipPath, err)
		}
		if !fileExists(filepath.Join(extracted, "bin", "elasticsearch")) {
			return fmt.Errorf("%s has no bin/elasticsearch", zipPath)
		}
		os.RemoveAll(l.esDist())
		if err := os.Rename(extracted, l.esDist()); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "stack: %s ready in %s\n", strings.Join(what, " and "), time.Since(start).Round(100*time.Millisecond))
	return nil
}

func runMaven(ctx context.Context, mvn string, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, mvn, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return ansiEscape.ReplaceAll(out.Bytes(), nil), err
}

// ansiEscape matches the color codes Maven prints even in batch mode.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// unzipStrip extracts a zip whose entries all sit under one top-level
// directory into dst, dropping that directory. Everything is made readable by
// all users (the Elasticsearch user must read it).
func unzipStrip(zipPath, dst string) error {
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return err
	}
	defer zr.Close()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, f := range zr.File {
		name := filepath.ToSlash(f.Name)
		_, rest, ok := strings.Cut(name, "/")
		if !ok || rest == "" {
			continue
		}
		target := filepath.Join(dst, filepath.FromSlash(rest))
		if !strings.HasPrefix(target, filepath.Clean(dst)+string(os.PathSeparator)) {
			return fmt.Errorf("zip entry %q escapes the target directory", f.Name)
		}
		mode := f.Mode()
		switch {
		case mode.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		case mode&os.ModeSymlink != 0:
			return fmt.Errorf("zip entry %q is a symlink; not supported", f.Name)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		perm := os.FileMode(0o644)
		if mode.Perm()&0o111 != 0 {
			perm = 0o755
		}
		if err := extractFile(f, target, perm); err != nil {
			return err
		}
	}
	return nil
}

func extractFile(f *zip.File, target string, perm os.FileMode) error {
	r, err := f.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.Chmod(target, perm) // umask
}

// runAs is the unprivileged user Elasticsearch runs as when we are root.
type runAs struct {
	Name     string
	Uid, Gid int
}

func (r *runAs) credential() *syscall.SysProcAttr {
	if r == nil {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{
		Uid: uint32(r.Uid), Gid: uint32(r.Gid), Groups: []uint32{},
	}}
}

const esUser = "shipper-es"

// esRunAs returns nil if Elasticsearch can run as the current user (not
// root); as root it returns (creating it if needed) the system user
// shipper-es, or nobody if useradd is unavailable.
func esRunAs(log io.Writer) (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if u, err := lookupUser(esUser); err == nil {
		return u, nil
	}
	if useradd, err := exec.LookPath("useradd"); err == nil {
		fmt.Fprintf(log, "stack: creating system user %s (Elasticsearch refuses to run as root)\n", esUser)
		out, err := exec.Command(useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", esUser).CombinedOutput()
		if u, lerr := lookupUser(esUser); lerr == nil {
			return u, nil // created now, or concurrently by someone else
		}
		if err != nil {
			return nil, fmt.Errorf("Elasticsearch refuses to run as root and `useradd %s` failed (%v): %s", esUser, err, strings.TrimSpace(string(out)))
		}
	}
	u, err := lookupUser("nobody")
	if err != nil {
		return nil, fmt.Errorf("Elasticsearch refuses to run as root, and there is neither useradd (apt-get install passwd) nor a user nobody to run it as")
	}
	fmt.Fprintf(log, "stack: useradd is unavailable; running Elasticsearch as nobody\n")
	return u, nil
}

func lookupUser(name string) (*runAs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	return &runAs{Name: name, Uid: uid, Gid: gid}, nil
}

// checkTraversable makes sure user r can reach dir: every directory on the
// way must be searchable by others (r is neither owner nor in the group).
func checkTraversable(dir string, r *runAs) error {
	if r == nil {
		return nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		ok := st.Mode().Perm()&0o001 != 0
		if sys, isSys := st.Sys().(*syscall.Stat_t); isSys && int(sys.Uid) == r.Uid {
			ok = st.Mode().Perm()&0o100 != 0
		}
		if !ok {
			return fmt.Errorf("Elasticsearch runs as user %s, which cannot enter %s (mode %v) on the way to the stack directory %s; set SHIPPER_STACK_DIR to a directory under /tmp (or chmod o+x %s)", r.Name, d, st.Mode().Perm(), dir, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// chownTree gives a tree to user r.
func chownTree(root string, r *runAs) error {
	if r == nil {
		return nil
	}
	return filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, r.Uid, r.Gid)
	})
}

// copyTree copies regular files and directories from src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
