// Tell require.js that the widget manager's modules live next to this file (the book's _static folder). The bundled
// modules (@jupyter-widgets/controls, ..., html-manager/dist/...) find their icon fonts relative to their own module
// URL, which require.js derives from these paths: without them, offline pages ask for the fonts under the page's own
// folder and show no icons. Loaded after require.js and before embed-amd.js (book/_config.yml: nb_ipywidgets_js).
(function () {
  var staticDir = document.currentScript.src.replace(/\/[^/]*$/, "");
  require.config({
    paths: {
      "@jupyter-widgets": staticDir,
      "@jupyter-widgets/html-manager/dist": staticDir,
    },
  });
})();
