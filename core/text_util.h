// Small string helpers shared by the config, data and CLI code.
#pragma once
#include <string>
#include <vector>

namespace mhc {

std::string to_lower(std::string s);
std::string trim(const std::string& s);
std::vector<std::string> split(const std::string& s, char sep);
bool starts_with(const std::string& s, const std::string& prefix);
bool ends_with(const std::string& s, const std::string& suffix);
// Edit distance, for "did you mean" hints.
int edit_distance(const std::string& a, const std::string& b);
// The candidate closest to `word`, or "" when none is plausibly a typo of it. A
// candidate whose last dotted component equals the word's also counts.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);
// Reads a whole file; MhcError naming the path when it cannot be read.
std::string read_text_file(const std::string& path);
// Writes a whole file atomically (temporary file, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace mhc
