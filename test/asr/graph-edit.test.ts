import { describe, expect, it } from 'vitest';
import { unreadDropped } from '../../src/asr/graph-edit.js';
import { GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_NODE, initializerInfo, readModel, readNode, valueInfo } from '../../src/asr/onnx-model.js';
import { bytesField, parseMessage } from '../../src/asr/onnx-proto.js';
import { GraphBuilder } from '../../tools/onnx-graph.js';

describe('unreadDropped', () => {
  // y = Add(Split(x), w); a Mul nothing reads, over a constant only it reads
  const g = new GraphBuilder('dead');
  const x = g.input('x', 'float32', [4]);
  const w = g.f32([1, 2]);
  const dead = g.f32([3, 3]);
  g.op('Mul', [x, dead]);
  const sizes = g.i64([2, 2]);
  const half = g.op('Split', [x, sizes], { axis: 0 });
  g.output('y', 'float32', [2], g.op('Add', [half, w]));
  const model = readModel(g.build('dead.data').model);
  const kept = (graph: Uint8Array[]) => {
    const fields = graph.map((raw) => parseMessage(raw)[0]!);
    return {
      ops: fields.filter((f) => f.n === GRAPH_NODE).map((f) => readNode(f).opType).sort(),
      initializers: fields.filter((f) => f.n === GRAPH_INITIALIZER).map((f) => initializerInfo(f).name).sort(),
    };
  };

  it('drops the nodes nothing reads and the initializers only they read, in any node order', () => {
    const fields = model.graph.map((f) => f.raw);
    const reversed = [...model.graph.filter((f) => f.n !== GRAPH_NODE), ...model.graph.filter((f) => f.n === GRAPH_NODE).reverse()].map((f) => f.raw);
    for (const graph of [fields, reversed]) {
      const { ops, initializers } = kept(unreadDropped(graph, new Set(['y'])));
      expect(ops).toEqual(['Add', 'Split']);
      expect(initializers).toEqual([w, sizes].sort());
    }
  });

  it('keeps an initializer that is also a graph input (as older exports list them)', () => {
    const graph = [...model.graph.map((f) => f.raw), bytesField(GRAPH_INPUT, valueInfo(dead, 'float32', [2]))];
    expect(kept(unreadDropped(graph, new Set(['y']))).initializers).toContain(dead);
  });
});
