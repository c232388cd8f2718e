// Package agentlog reads the agent's JSON log files for benchmark reports.
package agentlog

import (
	"bufio"
	"encoding/json"
	"os"
)

// Count counts the log lines of the file at path whose level keep accepts,
// keyed "LEVEL msg". Lines that are not JSON are counted under "(not JSON)
// " and their first 120 bytes. A file that cannot be read counts nothing.
func Count(path string, keep func(level string) bool) map[string]int {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			text := sc.Text()
			if len(text) > 120 {
				text = text[:120] + "…"
			}
			counts["(not JSON) "+text]++
			continue
		}
		if keep(l.Level) {
			counts[l.Level+" "+l.Msg]++
		}
	}
	return counts
}
