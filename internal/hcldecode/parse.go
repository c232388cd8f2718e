package hcldecode

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// ParseFile parses an HCL file in native syntax. filename is used in the
// ranges of diagnostics. The file map is what FormatDiagnostics needs to show
// source snippets. The body is usable even when the diagnostics have errors
// (it holds whatever parsed), but decoding it then tends to add noise, so
// callers usually stop after a parse error.
func ParseFile(filename string, src []byte) (hcl.Body, map[string]*hcl.File, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if f == nil || f.Body == nil {
		f = &hcl.File{Body: hcl.EmptyBody(), Bytes: src}
	}
	return f.Body, map[string]*hcl.File{filename: f}, diags
}

// FormatDiagnostics renders diagnostics as plain text in hcl's usual layout
// (summary, source snippet, detail), each prefixed with "file:line:col: "
// because hcl's own header names only the line, and editors and terminals
// jump to file:line:col. Detail text is not wrapped: the terminal or log
// viewer does that better than a guess.
func FormatDiagnostics(files map[string]*hcl.File, diags hcl.Diagnostics) string {
	var b strings.Builder
	wr := hcl.NewDiagnosticTextWriter(&b, files, 0, false)
	for _, d := range diags {
		if d == nil {
			continue
		}
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		// Writing to a strings.Builder cannot fail.
		_ = wr.WriteDiagnostic(d)
	}
	return b.String()
}
