package deploy

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var dockerfilePath = filepath.Join(root, "Dockerfile")

// dockerImage is what the Dockerfile says about the image it builds.
type dockerImage struct {
	goVersion  string   // default of the global ARG GO_VERSION
	builder    string   // the first stage's FROM
	build      []string // the words of the RUN that runs go build
	binary     string   // where the final stage copies the binary to
	builtAt    string   // where the build stage writes it (go build -o)
	copiedFrom string   // what the final stage copies
	base       string   // the final stage's FROM
	user       string   // the final stage's USER
	entrypoint []string
	cmd        []string
}

func readDockerfile(t *testing.T) dockerImage {
	t.Helper()
	src, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	var img dockerImage
	stage := -1
	for _, in := range parseDockerfile(string(src)) {
		at := func(what string) string { return rel(dockerfilePath) + ":" + strconv.Itoa(in.line) + ": " + what }
		switch in.cmd {
		case "FROM":
			stage++
			image, _, _ := strings.Cut(in.args, " ")
			if stage == 0 {
				img.builder = image
			}
			img.base = image
			img.user, img.copiedFrom, img.binary, img.entrypoint, img.cmd = "", "", "", nil, nil
		case "ARG":
			if name, def, ok := strings.Cut(in.args, "="); ok && stage < 0 && name == "GO_VERSION" {
				img.goVersion = def
			}
		case "RUN":
			if strings.Contains(in.args, "go build") {
				img.build = strings.Fields(in.args)
				if i := slices.Index(img.build, "-o"); i >= 0 && i+1 < len(img.build) {
					img.builtAt = img.build[i+1]
				}
			}
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.HasPrefix(f[0], "--from=") {
				img.copiedFrom, img.binary = f[1], f[2]
			}
		case "USER":
			img.user = in.args
		case "ENTRYPOINT", "CMD":
			var words []string
			if err := json.Unmarshal([]byte(in.args), &words); err != nil {
				t.Errorf("%s: want the exec form, a JSON array (the shell form would put /bin/sh, absent from the image, in front and keep SIGTERM from the agent): %v",
					at(in.cmd), err)
			}
			if in.cmd == "ENTRYPOINT" {
				img.entrypoint = words
			} else {
				img.cmd = words
			}
		}
	}
	return img
}

var goDirective = regexp.MustCompile(`(?m)^go (\S+)$`)

// The image is built as `make build` builds the binary, static and
// non-root, with the Go version go.mod asks for.
func TestDockerfile(t *testing.T) {
	img := readDockerfile(t)
	df := rel(dockerfilePath)

	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if m := goDirective.FindSubmatch(mod); m == nil {
		t.Errorf("go.mod: no go directive")
	} else if string(m[1]) != img.goVersion {
		t.Errorf("%s: ARG GO_VERSION = %q, want go.mod's go directive %q (an older toolchain would have to download the right one, a newer would build something untested)",
			df, img.goVersion, m[1])
	}
	if !strings.HasPrefix(img.builder, "golang:${GO_VERSION}") {
		t.Errorf("%s: the build stage is FROM %q, want golang:${GO_VERSION}", df, img.builder)
	}

	// Every setting and flag of `make build` but the output path.
	var makeBuild []string
	for _, line := range makeDryRun(t, "build") {
		if strings.Contains(line, " build ") {
			makeBuild = strings.Fields(line)
		}
	}
	if makeBuild == nil {
		t.Fatal("make -n build printed no go build command")
	}
	for i, w := range makeBuild {
		if (strings.HasPrefix(w, "-") || strings.Contains(w, "=")) && w != "-o" && (i == 0 || makeBuild[i-1] != "-o") {
			if !slices.Contains(img.build, w) {
				t.Errorf("%s: the go build RUN lacks %q, which `make build` uses (%s)", df, w, strings.Join(makeBuild, " "))
			}
		}
	}
	if !slices.Contains(img.build, "CGO_ENABLED=0") || !slices.Contains(img.build, "./cmd/shipper") {
		t.Errorf("%s: want CGO_ENABLED=0 go build ... ./cmd/shipper: the final stage has no libc; got %q", df, strings.Join(img.build, " "))
	}

	switch {
	case strings.HasPrefix(img.base, "gcr.io/distroless/static"):
	case img.base == "scratch":
		t.Errorf("%s: FROM scratch has no CA certificates: copy them in and teach this test where", df)
	default:
		t.Errorf("%s: final stage FROM %q: want a static base (gcr.io/distroless/static*), with nothing the agent does not need", df, img.base)
	}
	if img.copiedFrom != img.builtAt || img.builtAt == "" {
		t.Errorf("%s: the final stage copies %q, but go build writes %q", df, img.copiedFrom, img.builtAt)
	}
	if len(img.entrypoint) != 1 || img.entrypoint[0] != img.binary {
		t.Errorf("%s: ENTRYPOINT %q, want [%q], the binary the final stage copies", df, img.entrypoint, img.binary)
	}

	uid, gid, err := numericUser(img.user)
	if err != nil {
		t.Fatalf("%s: USER %q in the final stage: %v", df, img.user, err)
	}
	// One UID everywhere: the DaemonSet runs as it and chowns the node's
	// buffer directory to it.
	k := loadK8s(t)
	sc := k.c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != uid || sc.RunAsGroup == nil || *sc.RunAsGroup != gid {
		t.Errorf("%s: USER %d:%d, but %s runAsUser:runAsGroup differ", df, uid, gid, k.where("securityContext"))
	}
	if !slices.Equal(img.cmd, k.c.Args) {
		t.Errorf("%s: CMD %q, but %s = %q: one configuration path for both", df, img.cmd, k.where("args"), k.c.Args)
	}
}

// numericUser reads USER uid:gid. Numbers, so that Kubernetes' runAsNonRoot
// can check the image (it refuses a name it cannot resolve) and so that the
// UID is the one chowned on the node.
func numericUser(s string) (uid, gid int64, err error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, errors.New("want uid:gid, both numbers")
	}
	uid, err1 := strconv.ParseInt(u, 10, 64)
	gid, err2 := strconv.ParseInt(g, 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, errors.New("want uid:gid, both numbers")
	case uid == 0 || gid == 0:
		return 0, 0, errors.New("root: want a non-root uid and gid")
	}
	return uid, gid, nil
}

// dockerInstruction is one instruction of a Dockerfile, continuation
// lines joined.
type dockerInstruction struct {
	line int    // where it starts, 1-based
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// parseDockerfile reads a Dockerfile's instructions: comments dropped,
// lines ending in a backslash joined to the next.
func parseDockerfile(src string) []dockerInstruction {
	var out []dockerInstruction
	var cur *dockerInstruction
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == nil) {
			continue
		}
		cont := strings.HasSuffix(trimmed, "\\")
		trimmed = strings.TrimSpace(strings.TrimSuffix(trimmed, "\\"))
		if cur == nil {
			cmd, args, _ := strings.Cut(trimmed, " ")
			cur = &dockerInstruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		} else {
			cur.args += " " + trimmed
		}
		if !cont {
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		out = append(out, *cur)
	}
	return out
}

// makeDryRun prints the commands a make target would run, with the
// Makefile's own defaults: variables a caller may have in the environment
// (PREFIX, GO, ...) are left out.
func makeDryRun(t *testing.T, target string) []string {
	t.Helper()
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Fatalf("make not on PATH: the Makefile is how the project builds (README.md)")
	}
	cmd := exec.Command(mk, "-n", "-s", target)
	cmd.Dir = root
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PREFIX", "DESTDIR", "GO", "BIN", "IMAGE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES", "VERSION":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	// The version is stamped from git in the Makefile and from the
	// VERSION build argument in the Dockerfile: the same flag, compared
	// with the Dockerfile's own spelling of the value.
	cmd.Args = append(cmd.Args, "VERSION=$${VERSION}") // make reads $$ as $
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n %s: %v\n%s", target, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}
