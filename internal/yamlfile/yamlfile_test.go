package yamlfile

import (
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct{ data, err string }{
		{"a: 1\n", ""},
		{"", "f.yaml: empty configuration"},
		{"~\n", "f.yaml: empty configuration"},
		{"a: 1\n---\nb: 2\n", "f.yaml:2: a second YAML document"},
		{"a: 1\nb: [1, 2\n", "f.yaml:2: did not find expected ',' or ']'"},
		{"a:\n\t- 1\n", "f.yaml:2: found character that cannot start any token"},
	} {
		_, err := Decode("f.yaml", []byte(tc.data))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("Decode(%q): %v", tc.data, err)
		case tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)):
			t.Errorf("Decode(%q) = %v, want %q...", tc.data, err, tc.err)
		}
	}
}

func TestErrorsInLineOrder(t *testing.T) {
	var e Errors
	if e.Err() != nil {
		t.Fatal("no errors, but Err is not nil")
	}
	e.Add(7, errors.New("seven"))
	e.Add(2, errors.New("two"))
	e.Add(7, errors.New("seven again"))
	if got, want := e.Err().Error(), "two\nseven\nseven again"; got != want || e.Len() != 3 {
		t.Errorf("Err = %q, want %q", got, want)
	}
}
