/// Where each tensor of a SASRec network lives in one flat `Float` buffer, so that the optimizer
/// runs one loop over all parameters and a gradient is one buffer of the same layout. Tensor
/// names follow the PyTorch state dict of the widely used SASRec port (`item_emb.weight`,
/// `attention_layers.0.in_proj_weight`, ...), so a model trained there exports with its names.
public struct SASRecLayout: Sendable, Equatable {
  public let dim: Int
  public let heads: Int
  public let blocks: Int
  public let maxlen: Int
  /// Rows of the item embedding: items + 1 (row 0 is padding, row i + 1 is item i).
  public let itemRows: Int

  /// Offsets (in floats) of one block's tensors.
  public struct Block: Sendable, Equatable {
    public let attentionNormWeight: Int
    public let attentionNormBias: Int
    /// [3d, d]: query rows, then key rows, then value rows (torch.nn.MultiheadAttention).
    public let inProjWeight: Int
    /// [3d]
    public let inProjBias: Int
    public let outProjWeight: Int
    public let outProjBias: Int
    public let ffnNormWeight: Int
    public let ffnNormBias: Int
    /// [d (out), d (in)]
    public let conv1Weight: Int
    public let conv1Bias: Int
    public let conv2Weight: Int
    public let conv2Bias: Int
  }

  public let itemEmbedding: Int
  public let positionEmbedding: Int
  public let block: [Block]
  public let lastNormWeight: Int
  public let lastNormBias: Int
  /// Floats in the buffer (tensors start at multiples of 16 floats; the gaps stay zero).
  public let count: Int

  /// One named tensor: its offset and shape.
  public struct Tensor: Sendable, Equatable {
    public let name: String
    public let offset: Int
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }
  }
  /// Every tensor, in state-dict order.
  public let tensors: [Tensor]

  public init(dim d: Int, heads: Int, blocks: Int, maxlen: Int, items: Int) {
    self.dim = d
    self.heads = heads
    self.blocks = blocks
    self.maxlen = maxlen
    self.itemRows = items + 1
    var offset = 0
    var tensors: [Tensor] = []
    func take(_ name: String, _ shape: [Int]) -> Int {
      let at = offset
      tensors.append(Tensor(name: name, offset: at, shape: shape))
      offset = (at + shape.reduce(1, *) + 15) & ~15
      return at
    }
    itemEmbedding = take("item_emb.weight", [items + 1, d])
    positionEmbedding = take("pos_emb.weight", [maxlen, d])
    var block: [Block] = []
    for b in 0..<blocks {
      let a = "attention_layers.\(b)."
      let f = "forward_layers.\(b)."
      block.append(
        Block(
          attentionNormWeight: take("attention_layernorms.\(b).weight", [d]),
          attentionNormBias: take("attention_layernorms.\(b).bias", [d]),
          inProjWeight: take(a + "in_proj_weight", [3 * d, d]),
          inProjBias: take(a + "in_proj_bias", [3 * d]),
          outProjWeight: take(a + "out_proj.weight", [d, d]),
          outProjBias: take(a + "out_proj.bias", [d]),
          ffnNormWeight: take("forward_layernorms.\(b).weight", [d]),
          ffnNormBias: take("forward_layernorms.\(b).bias", [d]),
          conv1Weight: take(f + "conv1.weight", [d, d]),
          conv1Bias: take(f + "conv1.bias", [d]),
          conv2Weight: take(f + "conv2.weight", [d, d]),
          conv2Bias: take(f + "conv2.bias", [d])))
    }
    self.block = block
    lastNormWeight = take("last_layernorm.weight", [d])
    lastNormBias = take("last_layernorm.bias", [d])
    count = offset
    self.tensors = tensors
  }
}
