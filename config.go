package shipper

// FieldError is a validation problem with one configuration setting. Path
// names the setting relative to the Config that reports it, in its
// configuration names ("chunk_size"); the enclosing configuration prefixes
// its block ("buffer.chunk_size"), so the agent can show the file position of
// the offending value. Return it as a pointer.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	msg := "invalid value"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Path == "" {
		return msg
	}
	return e.Path + ": " + msg
}

func (e *FieldError) Unwrap() error { return e.Err }
