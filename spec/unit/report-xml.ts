// Test helper: a strict little XML reader, enough to prove a document is well-formed and read it back.

export interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_m, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[e]!;
  });
}

export function parseXml(xml: string): XmlNode {
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`XML error at ${i}: ${why}: ${JSON.stringify(xml.slice(i, i + 40))}`);
  };
  // Characters XML 1.0 forbids.
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(xml)) fail('forbidden control character');
  if (xml.startsWith('<?xml')) i = xml.indexOf('?>') + 2;
  const skipWs = () => {
    while (/\s/.test(xml[i] ?? '')) i++;
  };
  const text = (until: string): string => {
    const end = xml.indexOf(until, i);
    if (end < 0) fail(`expected ${until}`);
    const raw = xml.slice(i, end);
    if (/&(?!(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);)/i.test(raw)) fail('bare &');
    if (raw.includes('<')) fail('< in text');
    i = end;
    return decodeEntities(raw);
  };
  const element = (): XmlNode => {
    if (xml[i] !== '<') fail('expected <');
    i++;
    const name = /^[A-Za-z_][\w.-]*/.exec(xml.slice(i))?.[0] ?? fail('expected a name');
    i += name.length;
    const node: XmlNode = { name, attrs: {}, children: [], text: '' };
    for (;;) {
      skipWs();
      if (xml.startsWith('/>', i)) {
        i += 2;
        return node;
      }
      if (xml[i] === '>') {
        i++;
        break;
      }
      const attr = /^([A-Za-z_][\w.-]*)="/.exec(xml.slice(i)) ?? fail('expected an attribute');
      i += attr[0].length;
      if (attr[1]! in node.attrs) fail('duplicate attribute');
      const value = text('"');
      i++;
      node.attrs[attr[1]!] = value;
    }
    for (;;) {
      if (xml.startsWith(`</${name}>`, i)) {
        i += name.length + 3;
        return node;
      }
      if (xml[i] === '<') node.children.push(element());
      else node.text += text('<');
    }
  };
  skipWs();
  const root = element();
  skipWs();
  if (i !== xml.length) fail('content after the root element');
  return root;
}

