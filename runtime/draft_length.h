// How many tokens to draft in each speculative round, from what the rounds
// so far measured. A round with k drafts yields, if each draft token is
// kept with probability a independently, E(k) = (1 - a^(k+1)) / (1 - a)
// tokens, and costs C(k) = T(k + 1) + d k: the verification round trip of
// k + 1 rows, T(r) = t0 + t_row r (the link's RTT and the servers' fixed
// cost, plus their cost per extra row), and d per draft token on the
// device. The policy picks the k in [0, max_draft] with the most tokens
// per second, E(k) / C(k); k = 0 is a plain step (E = 1, C = T(1)), which
// it takes when drafting does not pay. This is SpecDec++'s question (stop
// when another draft token is not worth its cost) asked per round with
// measured costs instead of a fixed threshold.
#ifndef EDGESPLIT_RUNTIME_DRAFT_LENGTH_H_
#define EDGESPLIT_RUNTIME_DRAFT_LENGTH_H_

namespace edgesplit {

// Not thread-safe: one per generation.
class DraftLengthPolicy {
 public:
  // 1 <= max_draft.
  explicit DraftLengthPolicy(int max_draft);

  // The next round's draft length; 0: a plain step. While drafting does
  // not pay, plain steps run for 4, 8, ... 64 rounds between one-round
  // probes with drafts (the acceptance rate may change with the text).
  int Next();
  // What a round measured: a plain step's round trip, or a round of k
  // drafts of which `accepted` were kept, the seconds spent drafting them
  // and the verification's round trip.
  void OnPlain(double seconds);
  void OnDraft(int k, int accepted, double draft_seconds,
               double verify_seconds);

  // The current estimates (for stats and tests).
  double acceptance() const;            // a
  double RoundSeconds(int rows) const;  // T(rows)
  double draft_seconds_per_token() const { return draft_per_token_; }
  // argmax_k E(k) / C(k) under the current estimates.
  int Best() const;

 private:
  void AddRound(int rows, double seconds);

  const int max_draft_;
  // Acceptance: decayed counts of kept drafts and of rejections (a
  // geometric's maximum-likelihood a = kept / (kept + rejections)), from
  // a weak prior of a = 1/2.
  double kept_ = 1, rejected_ = 1;
  // T(rows): least squares over decayed (rows, seconds) samples.
  double w_ = 0, sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;
  double draft_per_token_ = 0;
  bool measured_draft_ = false;
  int pause_ = 0, pause_length_ = 4;
  bool probing_ = false;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_DRAFT_LENGTH_H_
