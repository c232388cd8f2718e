package hcldecode

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	shipper "github.com/shipper-agent/shipper"
)

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[shipper.ByteSize]()
)

type fieldKind int

const (
	attrField fieldKind = iota
	blockField
	blockSliceField
	labelField
)

// field is one tagged struct field.
type field struct {
	index    int
	goName   string
	name     string // hcl name
	kind     fieldKind
	required bool
	typ      reflect.Type // the field's type; for blockSliceField, the element type
	sub      *structInfo  // for block fields, the block's struct
}

// structInfo is what Decode needs to know about one struct type.
type structInfo struct {
	fields []field
	label  *field
	schema *hcl.BodySchema
}

func (s *structInfo) byName(name string) *field {
	for i := range s.fields {
		if s.fields[i].name == name {
			return &s.fields[i]
		}
	}
	return nil
}

// lookup finds a field by hcl name first, then by Go name.
func (s *structInfo) lookup(seg string) *field {
	if f := s.byName(seg); f != nil {
		return f
	}
	if s.label != nil && (s.label.name == seg || s.label.goName == seg) {
		return s.label
	}
	for i := range s.fields {
		if s.fields[i].goName == seg {
			return &s.fields[i]
		}
	}
	return nil
}

// inspect reads the tags of struct type t and, recursively, of its blocks.
// Every problem is a programming error, reported by panic so that it shows on
// the first Decode of any file, not only of a file that sets the bad field.
func inspect(t reflect.Type) *structInfo {
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("hcldecode: %s is not a struct", t))
	}
	info := &structInfo{schema: &hcl.BodySchema{}}
	seen := map[string]bool{}
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("hcl")
		if !ok || tag == "-" {
			continue
		}
		where := t.String() + "." + sf.Name
		if !sf.IsExported() {
			panic(fmt.Sprintf("hcldecode: %s has an hcl tag but is unexported", where))
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			panic(fmt.Sprintf("hcldecode: %s: hcl tag %q has no name", where, tag))
		}
		if seen[name] {
			panic(fmt.Sprintf("hcldecode: %s: hcl name %q is used twice in %s", where, name, t))
		}
		seen[name] = true
		f := field{index: i, goName: sf.Name, name: name, typ: sf.Type}
		switch opts {
		case "", "optional":
			f.kind = attrField
		case "required":
			f.kind, f.required = attrField, true
		case "block":
			switch {
			case sf.Type.Kind() == reflect.Struct:
				f.kind = blockField
			case sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct:
				f.kind, f.typ = blockSliceField, sf.Type.Elem()
			default:
				panic(fmt.Sprintf("hcldecode: %s: a block field must be a struct or a slice of structs, not %s", where, sf.Type))
			}
		case "label":
			if sf.Type.Kind() != reflect.String {
				panic(fmt.Sprintf("hcldecode: %s: a label field must be a string, not %s", where, sf.Type))
			}
			if info.label != nil {
				panic(fmt.Sprintf("hcldecode: %s: %s already has a label field (%s); only one is supported", where, t, info.label.goName))
			}
			f.kind = labelField
			info.label = &f
			continue
		default:
			panic(fmt.Sprintf("hcldecode: %s: unknown hcl tag option %q (want optional, required, block or label)", where, opts))
		}
		switch f.kind {
		case attrField:
			if !attrTypeSupported(sf.Type) {
				panic(fmt.Sprintf("hcldecode: %s: unsupported attribute type %s", where, sf.Type))
			}
			info.schema.Attributes = append(info.schema.Attributes, hcl.AttributeSchema{Name: name, Required: f.required})
		case blockField, blockSliceField:
			sub := inspect(f.typ)
			f.sub = sub
			hs := hcl.BlockHeaderSchema{Type: name}
			if sub.label != nil {
				hs.LabelNames = []string{sub.label.name}
			}
			info.schema.Blocks = append(info.schema.Blocks, hs)
		}
		info.fields = append(info.fields, f)
	}
	return info
}

func attrTypeSupported(t reflect.Type) bool {
	if t == durationType || t == byteSizeType {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	case reflect.Map:
		return t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.String
	}
	return false
}
