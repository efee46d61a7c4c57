//! Edits of a valid token, shared by the fuzz targets that mutate tokens.

/// Applies `edits` to `original`, three bytes an edit: position (scaled to the token's length),
/// operation (replace, insert, remove), byte. `None` when the result is not UTF-8.
pub fn apply(original: &str, edits: &[u8]) -> Option<String> {
    let mut token = original.as_bytes().to_vec();
    for edit in edits.chunks(3) {
        let [at, op, byte] = [
            edit[0],
            *edit.get(1).unwrap_or(&0),
            *edit.get(2).unwrap_or(&0),
        ];
        if token.is_empty() {
            break;
        }
        let at = usize::from(at) * token.len() / 256;
        match op % 3 {
            0 => token[at] = byte,
            1 => token.insert(at, byte),
            _ => {
                token.remove(at);
            }
        }
    }
    String::from_utf8(token).ok()
}
