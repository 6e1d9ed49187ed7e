// Renders Vega-Lite specs to SVG with the scripts of a page, run as a page runs them (no module system:
// each attaches itself to the global object), without a network or a DOM. Reads {"scripts": [vega,
// vega-lite], "specs": [...]} on stdin; prints the SVGs as a JSON list. tests/test_dvc_plots.py uses it.
const vm = require("vm");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const context = {console, setTimeout, clearTimeout, setInterval, clearInterval, URL, TextEncoder, TextDecoder};
context.self = context;
context.window = context;
// The interactive parts of a spec (zoom, tooltips) listen on the window: there are no events to hear here.
context.addEventListener = () => {};
context.removeEventListener = () => {};
vm.createContext(context);
for (const code of input.scripts) vm.runInContext(code, context);
(async () => {
  const out = [];
  for (const spec of input.specs) {
    const compiled = context.vegaLite.compile(spec).spec;
    const view = new context.vega.View(context.vega.parse(compiled), {renderer: "none"});
    out.push(await view.toSVG());
  }
  process.stdout.write(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
