// Package manpage writes ferry's man pages (section 1 for the admin and CI
// tools, section 8 for the daemons) and shell completions from the
// commands themselves, at build time, so that they never drift from
// --help.
package manpage

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-cd/ferry/pkg/version"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// header is the man page header of every page. The date is fixed so that
// a build is reproducible.
func header(section string) *doc.GenManHeader {
	date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &doc.GenManHeader{Title: "", Section: section, Source: "ferry " + version.Version, Manual: "ferry manual", Date: &date}
}

// WriteTree writes a gzipped man page for cmd and each visible
// subcommand into dir, as Debian ships them.
func WriteTree(cmd *cobra.Command, section, dir string) error {
	tmp, err := os.MkdirTemp("", "ferry-man-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd.DisableAutoGenTag = true
	if err := doc.GenManTree(cmd, header(section), tmp); err != nil {
		return err
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(tmp, e.Name()))
		if err != nil {
			return err
		}
		if err := writeGzip(filepath.Join(dir, e.Name()+".gz"), data); err != nil {
			return err
		}
	}
	return nil
}

// Daemon is the command a daemon's man page is made from: its flags and
// its description.
func Daemon(program, summary, long string, fs *pflag.FlagSet) *cobra.Command {
	cmd := &cobra.Command{Use: program + " [flags]", Short: summary, Long: long, Run: func(*cobra.Command, []string) {}}
	cmd.Flags().AddFlagSet(fs)
	return cmd
}

// writeGzip writes data gzipped with no name or time in its header, so
// that the file is the same on every build.
func writeGzip(path string, data []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// WriteCompletions writes bash, zsh and fish completions of cmd into dir,
// under the names Debian's shells look for: bash/NAME, zsh/_NAME and
// fish/NAME.fish.
func WriteCompletions(cmd *cobra.Command, dir string) error {
	name := cmd.Name()
	for _, sub := range []string{"bash", "zsh", "fish"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	var b, z, f bytes.Buffer
	if err := cmd.GenBashCompletionV2(&b, true); err != nil {
		return err
	}
	if err := cmd.GenZshCompletion(&z); err != nil {
		return err
	}
	if err := cmd.GenFishCompletion(&f, true); err != nil {
		return err
	}
	for path, data := range map[string][]byte{
		filepath.Join(dir, "bash", name):         b.Bytes(),
		filepath.Join(dir, "zsh", "_"+name):      z.Bytes(),
		filepath.Join(dir, "fish", name+".fish"): f.Bytes(),
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("completion: %w", err)
		}
	}
	return nil
}
