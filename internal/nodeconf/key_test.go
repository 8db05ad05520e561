package nodeconf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKey(t *testing.T) {
	want := [16]byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		err     string // empty for success
	}{
		{"good", "00112233445566778899aabbccddeeff\n", 0o600, ""},
		{"no newline", "00112233445566778899aabbccddeeff", 0o600, ""},
		{"upper case and whitespace", "  00112233445566778899AABBCCDDEEFF \r\n\n", 0o400, ""},
		{"bad hex", "00112233445566778899aabbccddeefg\n", 0o600, "want 32 hex digits, found a character that is not one"},
		{"short", "00112233445566778899aabbccddeef\n", 0o600, "want 32 hex digits, found 31 characters"},
		{"long", "00112233445566778899aabbccddeeff00\n", 0o600, "want 32 hex digits, found 34 characters"},
		{"two lines", "0011223344556677\n8899aabbccddeeff\n", 0o600, "want 32 hex digits, found 33 characters"},
		{"empty", "", 0o600, "want 32 hex digits, found 0 characters"},
		{"huge", strings.Repeat(" ", 5000) + "00112233445566778899aabbccddeeff", 0o600, "want 32 hex digits"},
		{"group readable", "00112233445566778899aabbccddeeff\n", 0o640, "mode 0640 lets group or others access the key; run chmod 600 "},
		{"world writable", "00112233445566778899aabbccddeeff\n", 0o602, "run chmod 600"},
		{"group executable", "00112233445566778899aabbccddeeff\n", 0o610, "run chmod 600"},
		{"zero", "00000000000000000000000000000000\n", 0o600, "the key is all zero"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cluster.key")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			key, err := LoadKey(path)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if key != want {
					t.Errorf("key = %x, want %x", key, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadKey accepted %q with mode %v", tc.content, tc.mode)
			}
			if key != ([16]byte{}) {
				t.Errorf("LoadKey returned a key with its error")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %q does not name %s and contain %q", err, path, tc.err)
			}
		})
	}
}

func TestLoadKeyNotAFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("LoadKey(directory) = %v, want a not-a-regular-file error", err)
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadKey(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestGenerateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.key")
	if err := GenerateKey(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	key, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// No overwrite: the error says so and the key stays.
	if err := GenerateKey(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("GenerateKey over an existing file = %v, want fs.ErrExist", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("GenerateKey changed an existing key file")
	}

	// Two keys differ.
	other := filepath.Join(dir, "other.key")
	if err := GenerateKey(other); err != nil {
		t.Fatal(err)
	}
	key2, err := LoadKey(other)
	if err != nil {
		t.Fatal(err)
	}
	if key == key2 {
		t.Errorf("two generated keys are equal: %x", key)
	}

	if err := GenerateKey(filepath.Join(dir, "no", "such", "dir")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GenerateKey in a missing directory = %v, want fs.ErrNotExist", err)
	}
}
