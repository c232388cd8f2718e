package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kubeDir holds the manifests; every YAML or JSON file under it, in any
// folder, is decoded.
var kubeDir = filepath.Join(root, "deploy", "kubernetes")

// manifest is one decoded YAML document.
type manifest struct {
	file string // relative to the repository's root
	doc  int    // 1-based, within file
	obj  runtime.Object
}

func (m manifest) String() string {
	return fmt.Sprintf("%s (document %d, %s)", m.file, m.doc, m.obj.GetObjectKind().GroupVersionKind().Kind)
}

// decoder decodes the groups the manifests use (core/v1, apps/v1) the way
// the API server does with strict field validation: an unknown or
// misspelt field, a field in the wrong case, a duplicate key, or a kind or
// apiVersion not registered here is an error. Registering another group is
// a deliberate change to this list.
func decoder() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}

// decodeDocuments decodes every document of a YAML stream; documents that
// hold only comments are skipped.
func decodeDocuments(name string, src []byte) ([]manifest, error) {
	dec := decoder()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(src)))
	var out []manifest
	var errs []error
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, n, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err == nil && string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", name, n, err))
			continue
		}
		out = append(out, manifest{file: name, doc: n, obj: obj})
	}
	return out, errors.Join(errs...)
}

// loadManifests decodes every manifest under deploy/kubernetes.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	var all []manifest
	err := filepath.WalkDir(kubeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json": // what kubectl apply -f reads
		default:
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		ms, err := decodeDocuments(rel(path), src)
		if err != nil {
			t.Error(err)
		}
		all = append(all, ms...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return all
}

// only returns the one object of type T, failing unless there is exactly one.
func only[T runtime.Object](t *testing.T, ms []manifest) (T, manifest) {
	t.Helper()
	var found []manifest
	for _, m := range ms {
		if _, ok := m.obj.(T); ok {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T under %s, found %d: %v", zero, rel(kubeDir), len(found), found)
	}
	return found[0].obj.(T), found[0]
}

// Every manifest decodes strictly, and each kind is one the checks in this
// package know: a new kind needs its own checks before it ships.
func TestManifestsDecodeStrictly(t *testing.T) {
	ms := loadManifests(t)
	ns, _ := only[*corev1.Namespace](t, ms)
	only[*corev1.ServiceAccount](t, ms)
	only[*corev1.ConfigMap](t, ms)
	only[*corev1.Secret](t, ms)
	only[*appsv1.DaemonSet](t, ms)
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.Namespace:
		case *corev1.ServiceAccount, *corev1.ConfigMap, *corev1.Secret, *appsv1.DaemonSet:
			if got := o.(interface{ GetNamespace() string }).GetNamespace(); got != ns.Name {
				t.Errorf("%s: metadata.namespace = %q, want %q (namespace.yaml)", m, got, ns.Name)
			}
		default:
			t.Errorf("%s: kind %T has no checks in deploy/", m, o)
		}
	}
}

// The decoder is strict: each mistake below, made in the real
// daemonset.yaml, is refused. Without this a decoder that accepted
// anything would pass TestManifestsDecodeStrictly.
func TestDecoderRejectsMistakes(t *testing.T) {
	path := filepath.Join(kubeDir, "daemonset.yaml")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeDocuments(rel(path), src); err != nil {
		t.Fatalf("the unchanged file must decode: %v", err)
	}
	cases := []struct{ name, old, new string }{
		{"misspelt field", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"},
		{"field in the wrong case", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
		{"field at the wrong level", "      serviceAccountName: shipper", "      serviceAccountName: shipper\n      replicas: 2"},
		{"duplicate key", "  minReadySeconds: 10", "  minReadySeconds: 10\n  minReadySeconds: 20"},
		{"unknown kind", "kind: DaemonSet", "kind: DeamonSet"},
		{"retired apiVersion", "apiVersion: apps/v1", "apiVersion: extensions/v1beta1"},
		{"wrong type", "maxUnavailable: 1", "maxUnavailable: [1]"},
	}
	for _, c := range cases {
		if !bytes.Contains(src, []byte(c.old)) {
			t.Errorf("%s: daemonset.yaml no longer contains %q: update this case", c.name, c.old)
			continue
		}
		bad := strings.Replace(string(src), c.old, c.new, 1)
		if _, err := decodeDocuments("daemonset.yaml", []byte(bad)); err == nil {
			t.Errorf("%s (%q → %q): decoded without error", c.name, c.old, c.new)
		}
	}
}
