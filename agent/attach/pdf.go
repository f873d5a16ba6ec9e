package attach

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ledongthuc/pdf"
)

// MaxPDFPages bounds the pages whose text is extracted; the text of later
// pages is left out (and the cut marked).
const MaxPDFPages = 2000

// ErrPDF is a PDF whose text could not be read: malformed, encrypted, or
// without a text layer.
var ErrPDF = errors.New("attach: cannot read the PDF's text")

// ReadPDF extracts the text of the PDF in r (size bytes), page by page,
// and keeps it within budget bytes as CutText does. It stops reading once
// it has four times the budget (the tail then is the last page read, and
// the excerpt says so). A malformed PDF is ErrPDF, never a panic.
func ReadPDF(r io.ReaderAt, size int64, budget int) (ex Excerpt, err error) {
	defer func() {
		if p := recover(); p != nil {
			ex, err = Excerpt{}, fmt.Errorf("%w: malformed (%v)", ErrPDF, p)
		}
	}()
	rd, err := pdf.NewReader(r, size)
	if err != nil {
		return Excerpt{}, fmt.Errorf("%w: %v", ErrPDF, err)
	}
	pages := rd.NumPage()
	var b strings.Builder
	fonts := map[string]*pdf.Font{}
	stopped := 0
	for i := 1; i <= pages; i++ {
		if i > MaxPDFPages || b.Len() > 4*budget {
			stopped = i
			break
		}
		p := rd.Page(i)
		if p.V.IsNull() {
			continue
		}
		for _, name := range p.Fonts() {
			if _, ok := fonts[name]; !ok {
				f := p.Font(name)
				fonts[name] = &f
			}
		}
		text, err := p.GetPlainText(fonts)
		if err != nil {
			continue // one unreadable page does not hide the others
		}
		if text = strings.TrimSpace(text); text != "" {
			fmt.Fprintf(&b, "[page %d]\n%s\n", i, text)
		}
	}
	if strings.TrimSpace(b.String()) == "" {
		return Excerpt{}, fmt.Errorf("%w: no text layer (a scan?)", ErrPDF)
	}
	ex = CutText(b.String(), budget)
	if stopped > 0 {
		ex.Cut = true
		ex.Text += fmt.Sprintf("\n[… pages %d to %d were not read …]\n", stopped, pages)
	}
	return ex, nil
}
