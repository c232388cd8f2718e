// Package hcldecode decodes the agent's HCL configuration into plain typed
// Go structs, onto their defaults, and reports every problem at its place in
// the file.
//
// Why not gohcl: gohcl converts through cty, which knows nothing of
// time.Duration or shipper.ByteSize, so "5s" and "64MiB" would have to be
// strings in every Config and be parsed (and positioned) again by each
// package. gohcl also zeroes what the file leaves out, while we want each
// package to own a Config with a DefaultConfig() and decode the file on top of
// it. This package keeps those Config structs free of HCL types: they carry
// only tags.
//
// # Tag convention
//
// A field is decoded only if it has an hcl tag; untagged fields and fields
// tagged `hcl:"-"` are invisible to the file (so an unknown name in the file
// is an error, with hcl's "Did you mean" suggestion).
//
//	`hcl:"name"`           optional attribute; the same as `hcl:"name,optional"`.
//	                       Absent (or null) keeps the default already in the field.
//	`hcl:"name,required"`  attribute that must be present and not null, in
//	                       its block if that block is present (an absent
//	                       block keeps its defaults, required or not).
//	`hcl:"name,block"`     on a struct field: at most one block "name { ... }",
//	                       decoded onto the field's current value (its defaults);
//	                       absent keeps the defaults.
//	                       On a []struct field: any number of "name" blocks; if
//	                       at least one is present they replace the slice, each
//	                       decoded onto the zero value of the element type.
//	`hcl:"name,label"`     on a string field of a block's struct: the block's
//	                       single label, as in `output "es" { ... }`. A block
//	                       struct may have at most one label field.
//
// A list or map in the file replaces the default wholesale; nothing is merged.
//
// Attribute types: string and named strings (shipper.Secret), bool, int,
// int32, int64, float64, []string, map[string]string, time.Duration (a string
// such as "5s"; negative values are rejected) and shipper.ByteSize (a string
// such as "64MiB" or a whole number of bytes). A misuse of the tags or an
// unsupported field type is a programming error and makes Decode panic on its
// first use, whatever the file says, so it cannot hide in a rarely used field.
//
// # Positions and semantic errors
//
// Decode cannot know that memory_limit must exceed chunk_size; the owning
// package's Validate does. So that such an error still points into the file,
// Decode returns a Positions value, and Validate methods return *FieldError
// values naming the field by its path ("memory_limit", or Go name
// "MemoryLimit"). The caller prefixes nested paths with Nest and turns the
// result into positioned diagnostics with Positions.Diagnostics.
package hcldecode
