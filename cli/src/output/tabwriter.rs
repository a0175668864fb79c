//! Go's text/tabwriter as Docker's CLI configures it (minimum cell width
//! 10, padding 3, blanks), measuring cells by their display width as
//! Docker's copy of it does (go-runewidth): a CJK character or an emoji
//! takes two columns, a combining mark none.
//!
//! Cells end with a tab; the text after a line's last tab is not part of
//! any column. A column is aligned over each run of consecutive lines that
//! have a cell in it, exactly as Go's `format` walks them.

use unicode_width::UnicodeWidthStr;

/// Docker's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`.
pub const MIN_WIDTH: usize = 10;
pub const PADDING: usize = 3;

/// Columns a string takes on a terminal.
pub fn display_width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// `text` (lines of tab-terminated cells) aligned as Docker prints tables.
pub fn align(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut writer = Writer {
        lines: &lines,
        widths: Vec::new(),
        out: String::with_capacity(text.len() * 2),
    };
    writer.format(0, lines.len());
    writer.out
}

struct Writer<'a> {
    lines: &'a [Vec<&'a str>],
    /// The width of each enclosing column, outermost first.
    widths: Vec<usize>,
    out: String,
}

impl Writer<'_> {
    fn format(&mut self, mut line0: usize, line1: usize) {
        let column = self.widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            // A block of lines with a cell in this column starts here.
            self.write_lines(line0, this);
            line0 = this;
            let mut width = MIN_WIDTH;
            while this < line1 && column + 1 < self.lines[this].len() {
                width = width.max(display_width(self.lines[this][column]) + PADDING);
                this += 1;
            }
            self.widths.push(width);
            self.format(line0, this);
            self.widths.pop();
            line0 = this;
        }
        self.write_lines(line0, line1);
    }

    fn write_lines(&mut self, line0: usize, line1: usize) {
        for i in line0..line1 {
            for (j, cell) in self.lines[i].iter().enumerate() {
                self.out.push_str(cell);
                if let Some(width) = self.widths.get(j)
                    && j + 1 < self.lines[i].len()
                {
                    let used = display_width(cell);
                    self.out
                        .extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
                }
            }
            if i + 1 < self.lines.len() {
                self.out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_the_widest_cell_plus_three_and_at_least_ten() {
        let text = "ID\tNAME\tIMAGE\nabcdef123456\tweb\tnginx:1.27-alpine\n";
        assert_eq!(
            align(text),
            "ID             NAME      IMAGE\n\
             abcdef123456   web       nginx:1.27-alpine\n"
        );
    }

    #[test]
    fn an_empty_last_column_leaves_the_padding_as_go_does() {
        assert_eq!(align("A\tB\nx\t\n"), "A         B\nx         \n");
    }

    #[test]
    fn wide_characters_count_twice_and_combining_marks_not_at_all() {
        assert_eq!(display_width("数据库"), 6);
        assert_eq!(display_width("🐳"), 2);
        assert_eq!(display_width("e\u{301}"), 1);
        let text = "NAME\tSERVICES\n数据库スタック\t2\nweb\t1\n";
        let out = align(text);
        let lines: Vec<&str> = out.lines().collect();
        // 7 wide characters take 14 columns: the next column starts at 17.
        assert_eq!(lines[1], "数据库スタック   2");
        assert_eq!(lines[0], "NAME             SERVICES");
        assert_eq!(lines[2], "web              1");
    }

    #[test]
    fn a_column_aligns_only_over_consecutive_lines_that_have_it() {
        // The middle line has no tab: it ends the block, as in Go.
        let text = "a\tb\nno tabs here at all\nlonger cell\tc\n";
        assert_eq!(
            align(text),
            "a         b\nno tabs here at all\nlonger cell   c\n"
        );
    }
}
