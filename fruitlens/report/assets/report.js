(function(){
  function key(td){ if(!td) return ''; var v = td.getAttribute('data-v');
    return v !== null ? parseFloat(v) : td.textContent.trim().toLowerCase(); }
  function sortBy(th){
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(c){ c.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
    var rows = Array.prototype.slice.call(body.rows), sign = dir === 'ascending' ? 1 : -1;
    rows.sort(function(a, b){ var x = key(a.cells[col]), y = key(b.cells[col]);
      if (typeof x === 'number' && typeof y === 'number') return sign * (x - y);
      if (typeof x === 'number') return -1; if (typeof y === 'number') return 1;
      return sign * String(x).localeCompare(String(y), undefined, {numeric: true}); });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable thead th').forEach(function(th){
    th.addEventListener('click', function(){ sortBy(th); });
    th.title = 'click to sort';
  });
})();

// Click a picture to see it full size (as large as the window allows); click again or press Escape to close.
// The box is made on the first click, so a page nobody clicks holds no empty image.
(function(){
  var box = null, big = null, text = null;
  function close(){ if (box) { box.hidden = true; } }
  function open(img){
    if (!box) {
      box = document.createElement('div'); box.id = 'lightbox'; box.className = 'lightbox';
      box.setAttribute('role', 'dialog'); box.setAttribute('aria-label', 'enlarged picture');
      big = document.createElement('img'); text = document.createElement('p');
      box.appendChild(big); box.appendChild(text); document.body.appendChild(box);
      box.addEventListener('click', close);
    }
    var cap = img.closest('figure').querySelector('figcaption');
    big.src = img.src; big.alt = img.alt; text.textContent = cap ? cap.textContent : img.alt;
    box.hidden = false;
  }
  document.addEventListener('click', function(e){
    var img = e.target;
    if (box && box.contains(img)) return;
    if (img && img.tagName === 'IMG' && img.closest('figure')) open(img);
  });
  document.addEventListener('keydown', function(e){ if (e.key === 'Escape') close(); });
})();
