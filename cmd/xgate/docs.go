package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newDocs is the hidden `xgate docs`: man pages and shell completions
// generated from the commands themselves, for the package (make deb).
func newDocs() *cobra.Command {
	var manDir, compDir string
	cmd := &cobra.Command{
		Use:    "docs --man DIR --completions DIR",
		Short:  "Write the man pages and shell completions (for packaging)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			root := cmd.Root()
			if manDir != "" {
				if err := os.MkdirAll(manDir, 0o755); err != nil {
					return err
				}
				// A fixed date keeps the pages reproducible: the commit's
				// time when SOURCE_DATE_EPOCH says it, else the epoch.
				date := time.Unix(0, 0).UTC()
				if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
					var sec int64
					if _, err := fmt.Sscan(s, &sec); err == nil {
						date = time.Unix(sec, 0).UTC()
					}
				}
				hdr := &doc.GenManHeader{Title: "XGATE", Section: "1", Source: "xgate " + version, Manual: "xgate manual", Date: &date}
				root.DisableAutoGenTag = true
				if err := doc.GenManTree(root, hdr, manDir); err != nil {
					return fmt.Errorf("man pages: %w", err)
				}
			}
			if compDir != "" {
				if err := os.MkdirAll(compDir, 0o755); err != nil {
					return err
				}
				for name, gen := range map[string]func(string) error{
					"xgate.bash": func(p string) error { return root.GenBashCompletionFileV2(p, true) },
					"_xgate":     root.GenZshCompletionFile,
					"xgate.fish": func(p string) error { return root.GenFishCompletionFile(p, true) },
				} {
					if err := gen(filepath.Join(compDir, name)); err != nil {
						return fmt.Errorf("completion %s: %w", name, err)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "write man pages (section 1) here")
	cmd.Flags().StringVar(&compDir, "completions", "", "write bash, zsh and fish completions here")
	return cmd
}
