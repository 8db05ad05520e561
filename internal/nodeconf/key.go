package nodeconf

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// maxKeyFile bounds what LoadKey reads: a key file is 32 hex digits and a little whitespace.
const maxKeyFile = 4096

// LoadKey reads the 128-bit cluster key from the file at path: 32 hex digits, optionally
// surrounded by whitespace. It refuses a file that group or others may access in any way, and an
// all-zero key. Errors name the file but never quote its contents.
func LoadKey(path string) ([16]byte, error) {
	var key [16]byte
	f, err := os.Open(path)
	if err != nil {
		return key, fmt.Errorf("load cluster key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return key, fmt.Errorf("load cluster key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return key, fmt.Errorf("load cluster key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return key, fmt.Errorf("load cluster key %s: mode %04o lets group or others access the key; run chmod 600 %s",
			path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return key, fmt.Errorf("load cluster key: %w", err)
	}
	text := bytes.TrimSpace(data)
	if len(data) > maxKeyFile || len(text) != 2*len(key) {
		return key, fmt.Errorf("load cluster key %s: want 32 hex digits, found %d characters", path, len(text))
	}
	if _, err := hex.Decode(key[:], text); err != nil {
		return [16]byte{}, fmt.Errorf("load cluster key %s: want 32 hex digits, found a character that is not one", path)
	}
	if key == [16]byte{} {
		return key, fmt.Errorf("load cluster key %s: the key is all zero; generate a random one", path)
	}
	return key, nil
}

// GenerateKey writes a new random cluster key to a new file at path, with mode 0600, in the
// format LoadKey reads. It never overwrites: if path exists, the error wraps fs.ErrExist.
func GenerateKey(path string) error {
	var key [16]byte
	for key == [16]byte{} {
		if _, err := rand.Read(key[:]); err != nil {
			return fmt.Errorf("generate cluster key: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("generate cluster key: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key[:]) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Leave no partial key file behind.
		return fmt.Errorf("generate cluster key: %w", errors.Join(err, os.Remove(path)))
	}
	return nil
}
