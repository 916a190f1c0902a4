// Schema of CAM-TMP (TCAM's temporal max-pooling of class activation maps).
//
//   temporal_max_pool(cams[B,T,H,W] f32/f64, shot_ids[B,T] i64, n, direction, reweight, h,
//                     normalize) -> (pooled[B,T,H,W], winner[B,T,H,W] i32)
//
// direction: 0 = before (frames t-n..t), 1 = after (t..t+n), 2 = both (t-n..t+n). The window
// is clipped at the first frame whose shot id differs from frame t's (a shot boundary is never
// crossed, even if the same id appears again later). With reweight, every frame s is first
// mapped to r_s = exp(h * (cam_s - max_q cam_s(q))) = exp(h*cam_s) / max_q exp(h*cam_s(q)),
// the max taken over the pixels of that frame's own map. The winner of a pixel is the frame
// of largest (reweighted) value, the earliest frame on ties. With normalize, each pooled map
// is min-max normalised to [0,1] (a constant map becomes all zeros).
//
// The backward is its own op: it scatters the gradient through the winning frame and through
// the per-map max / min / max pixels used by the re-weighting and the normalisation.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(wsolbench, m) {
  m.def(
      "temporal_max_pool(Tensor cams, Tensor shot_ids, int n, int direction, bool reweight, "
      "float h, bool normalize) -> (Tensor, Tensor)");
  m.def(
      "temporal_max_pool_backward(Tensor grad_out, Tensor cams, Tensor winner, int n, "
      "int direction, bool reweight, float h, bool normalize) -> Tensor");
}
